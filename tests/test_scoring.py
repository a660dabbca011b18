"""bench/tasks/scoring.py: hand-written generations with expected verdicts, and the gold self-check."""
from __future__ import annotations

import json
import threading

import pytest

from bench.tasks.scoring import (extract_math_answer, gsm8k_flexible, gsm8k_strict, last_boxed,
                           normalize_math_answer, score_gsm8k, score_math)
from tests.conftest import FIXTURES, SHARED_DATA

# (generation, gold, strict, flexible): lm-eval gsm8k semantics (strict: first "#### N" or
# "The answer is N"; flexible: last number; both after removing , $ "(?s).*#### " and a final ".").
GSM8K_TABLE = [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", True, True),
    ("#### 1,000", "1000", True, True),                       # thousands comma
    ("The total is 1,000 dollars.\n#### 1000", "1000", True, True),
    ("#### $18", "18", False, True),                          # strict's class has no $
    ("#### 18.", "18", True, True),                           # trailing period
    ("#### -5", "-5", True, True),                            # negative
    ("The temperature drops to -5 degrees.", "-5", False, True),
    ("#### 5", "-5", False, False),                           # sign matters
    ("I think 3 apples and 4 pears make 7 fruits.", "7", False, True),
    ("7 fruits in total, from 3 apples and 4 pears", "7", False, False),  # last number is 4
    ("I don't know.", "7", False, False),                     # no number
    ("", "7", False, False),
    ("The answer is 42.", "42", True, True),
    ("The answer is: 42", "42", True, True),                  # MetaMathQA's final line
    ("The answer is $42.", "42", True, True),                 # dollar sign + period
    ("#### 18\n#### 20", "18", True, False),                  # strict takes the first, flexible the last
    ("#### 20\nOops, it is 18.", "18", False, True),
    ("#### 18.00", "18", False, False),                       # string match: 18.00 != 18 (math_verify: yes)
    ("#### 18.5", "18.5", True, True),
    ("#### 0", "0", True, True),
    ("Total: 5, then 10, then 15", "15", False, True),
    ("#### 1,234,567", "1234567", True, True),
    ("1,234", "1234", False, True),
    ("She pays $1,234.50 in total.", "1234.50", False, True),
    ("It costs 5 dollars.", "5", False, True),
    ("It costs 5.", "5", False, True),
    ("#### 5\n\nQuestion: what is 2+2?", "5", True, False),   # scoring sees what the stop strings left
    ("The answer is -3", "-3", True, True),
    ("#### -3.", "-3", True, True),
    ("#### .5", "0.5", False, False),
    ("#### 7 apples", "7", True, True),
    ("####18", "18", False, True),                            # strict needs "#### "
    ("THE ANSWER IS 18", "18", False, True),                  # strict regex is case-sensitive
    ("x = 3 + 4 = 7", "7", False, True),
    ("The answer is 7 apples.", "7", True, True),
    ("2 + 2 = 4. #### 4", "4", True, True),
    ("#### 1,000.", "1000", True, True),
    ("#### 3/4", "0.75", False, False),
    ("$$18$$", "18", False, True),
    ("Nothing here, 1 and", "7", False, False),
    ("-", "7", False, False),
    ("The answer is 5,000", "5000", True, True),
    ("#### 5000", "5,000", True, True),                       # the gold is normalised the same way
    ("Half of 10 is 5. #### 5", "5", True, True),
]

# (generation, gold, math_verify, exact_match); extraction = the last \boxed{}.
MATH_TABLE = [
    ("So $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True, True),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", True, True),    # \dfrac vs \frac
    ("\\boxed{\\frac12}", "\\frac{1}{2}", True, True),         # Minerva's \fracab fix
    ("\\boxed{0.5}", "\\frac{1}{2}", True, False),
    ("\\boxed{1/2}", "\\frac{1}{2}", True, False),
    ("\\boxed{\\frac{3}{4}}", "0.75", True, False),
    ("\\boxed{\\dfrac{3}{4}}", "\\tfrac34", True, True),
    ("\\boxed{[1,2)}", "[1,2)", True, True),                   # intervals
    ("\\boxed{[1,2]}", "[1,2)", False, False),                 # closed vs half-open
    ("\\boxed{(-\\infty, 3)}", "(-\\infty,3)", True, True),
    ("\\boxed{\\left(-\\infty, 3\\right)}", "(-\\infty,3)", True, True),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", True, True),
    ("\\boxed{\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", False, False),
    ("\\boxed{5\\text{ cm}}", "5", True, True),                # units
    ("\\boxed{5 \\text{ inches}}", "5", True, True),
    ("\\boxed{10^\\circ}", "10", True, True),
    ("\\boxed{\\$18}", "18", True, True),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", True, True),  # text answers
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", True, True),
    ("\\boxed{\\text{odd}}", "\\text{odd}", True, True),
    ("\\boxed{\\text{even}}", "\\text{odd}", False, False),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", True, True),   # two boxed: the last counts
    ("First \\boxed{3}, then corrected: \\boxed{4}", "3", False, False),
    ("The answer is 4.", "4", False, False),                  # no box: no answer
    ("no answer", "4", False, False),
    ("\\boxed{4", "4", False, False),                          # unbalanced braces
    ("\\boxed 4", "4", True, True),
    ("\\fbox{4}", "4", True, True),
    ("\\boxed{2\\sqrt{3}}", "2\\sqrt{3}", True, True),
    ("\\boxed{2\\sqrt3}", "2\\sqrt{3}", True, True),           # Minerva's \sqrta fix
    ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", True, False),        # equal value, other form
    ("\\boxed{x = 5}", "5", True, True),                        # Minerva keeps what follows "="
    ("\\boxed{-3}", "-3", True, True),
    ("\\boxed{3}", "-3", False, False),
    ("\\boxed{\\pi}", "\\pi", True, True),
    ("\\boxed{3.14}", "\\pi", False, False),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", True, True),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True, False),
    ("\\boxed{10\\%}", "10\\%", True, True),
    ("\\boxed{1,000}", "1000", True, True),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False, False),
    ("\\boxed{\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}}", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", True, True),
]


@pytest.mark.parametrize("generation,gold,strict,flexible", GSM8K_TABLE)
def test_gsm8k_table(generation, gold, strict, flexible):
    verdict = score_gsm8k(generation, gold)
    assert (verdict["strict"], verdict["flexible"]) == (strict, flexible), verdict


def test_gsm8k_tables_are_large_enough():
    assert len(GSM8K_TABLE) >= 40 and len(MATH_TABLE) >= 40


def test_gsm8k_extractions_and_math_verify():
    assert gsm8k_strict("x #### 1,000.\n#### 7") == "1,000."
    assert gsm8k_flexible("It was $1,000.") == "$1,000."
    assert gsm8k_flexible("none") is None
    verdict = score_gsm8k("#### 18.00", "18")
    assert verdict["math_verify"] and not verdict["strict"]     # numeric equality, string mismatch
    assert not score_gsm8k("I don't know", "18")["math_verify"]
    assert set(verdict) == {"extracted", "strict", "flexible", "math_verify"}


@pytest.mark.parametrize("generation,gold,math_verify,exact_match", MATH_TABLE)
def test_math_table(generation, gold, math_verify, exact_match):
    verdict = score_math(generation, gold)
    assert (verdict["math_verify"], verdict["exact_match"]) == (math_verify, exact_match), verdict


def test_math_extraction_rules():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("nothing") is None
    assert extract_math_answer("The answer is: 7", "boxed") is None
    assert extract_math_answer("so 7.\nThe answer is: 7", "boxed_or_answer_is") == "7"
    assert extract_math_answer("\\boxed{6}\nThe answer is: 7", "boxed_or_answer_is") == "6"
    assert score_math("The answer is: \\frac{1}{2}", "\\frac{1}{2}", "boxed_or_answer_is")["math_verify"]
    with pytest.raises(ValueError, match="allowed: boxed, boxed_or_answer_is"):
        extract_math_answer("x", "last_number")


def test_minerva_normalisation():
    assert normalize_math_answer("\\dfrac{1}{2}") == normalize_math_answer("\\frac12") == "\\frac{1}{2}"
    assert normalize_math_answer("1,000") == "1000"
    assert normalize_math_answer("5\\text{ cm}") == "5"
    assert normalize_math_answer("\\left( 1, 2 \\right)") == "(1,2)"


def test_math_verify_refuses_other_threads():
    errors = []

    def score():
        try:
            score_gsm8k("#### 1", "1")
        except RuntimeError as err:
            errors.append(str(err))

    worker = threading.Thread(target=score)
    worker.start()
    worker.join()
    assert errors and "main thread" in errors[0]


def _rows(path):
    return [json.loads(line) for line in open(path)]


# Each self-check runs on the committed rows (tests/fixtures) and on the whole file from the assets
# folder (README "Assets"), which skips where that is absent.
GSM8K_TEST = [pytest.param(FIXTURES, 40, id="fixture"),
              pytest.param(SHARED_DATA, 1319, id="full", marks=pytest.mark.assets("gsm8k/test.jsonl"))]
MATH500 = [pytest.param(FIXTURES, 40, id="fixture"),
           pytest.param(SHARED_DATA, 500, id="full", marks=pytest.mark.assets("math/math500_test.jsonl"))]


@pytest.mark.parametrize(("root", "n_rows"), GSM8K_TEST)
def test_gold_self_check_gsm8k_test(root, n_rows):
    """Every GSM8K test gold solution, scored as a generation: the primary (flexible) >= 99.5%."""
    rows = _rows(root / "gsm8k" / "test.jsonl")
    verdicts = [score_gsm8k(r["answer"], r["answer"].split("####")[-1].strip()) for r in rows]
    rates = {m: sum(v[m] for v in verdicts) / len(rows) for m in ("strict", "flexible", "math_verify")}
    print("gsm8k gold self-check", len(rows), rates)
    assert len(rows) == n_rows
    assert rates["flexible"] >= 0.995 and rates["strict"] >= 0.995 and rates["math_verify"] >= 0.995


@pytest.mark.parametrize(("root", "n_rows"), MATH500)
def test_gold_self_check_math500(root, n_rows):
    """Every MATH-500 gold solution, scored as a generation against the official answer."""
    rows = _rows(root / "math" / "math500_test.jsonl")
    verdicts = [score_math(r["solution"], r["answer"]) for r in rows]
    rates = {m: sum(v[m] for v in verdicts) / len(rows) for m in ("math_verify", "exact_match")}
    print("math500 gold self-check", len(rows), rates)
    assert len(rows) == n_rows
    assert rates["math_verify"] >= 0.995 and rates["exact_match"] >= 0.995
