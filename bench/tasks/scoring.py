"""Answer extraction and verdicts for GSM8K and MATH generations.

GSM8K follows lm-evaluation-harness's `gsm8k` task (lm_eval/tasks/gsm8k/gsm8k.yaml, version 3):
- `strict`: the first `#### N`; failing that, the first "The answer is N" (gsm8k-cot's strict form;
  MetaMathQA-trained models write "The answer is: N", so the colon is optional).
- `flexible`: the last number in the generation, regex `(-?[$0-9.,]{2,})|(-?[0-9]+)`.
- both compared with the gold after lm-eval's exact_match normalisation: lower case, and the
  regexes `,`, `\\$`, `(?s).*#### `, `\\.$` removed from both sides.
- `math_verify`: math-verify on the whole generation against the gold number (README settings).

MATH: the last `\\boxed{}` (or `\\fbox{}`) is the answer; `math_verify` parses the gold first and
verifies (gold, prediction) (math-verify's `verify` is asymmetric); `exact_match` compares the
Minerva-normalised strings (Lewkowycz et al. 2022, appendix D, as lm-eval's minerva_math uses),
plus `\\dfrac`/`\\tfrac` -> `\\frac` and `\\left`/`\\right` removal (our additions).

math-verify times out with `signal.alarm`, which only works in the main thread: every call here
checks that it runs there and raises otherwise (a silently disabled timeout could hang a run).
"""
from __future__ import annotations

import re
import threading

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

# --- GSM8K -------------------------------------------------------------------------------------

GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
GSM8K_ANSWER_IS = re.compile(r"The answer is:? \$?(\-?[0-9\.\,]+)")
GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
# lm-eval gsm8k.yaml `regexes_to_ignore`, applied in this order to prediction and gold alike.
GSM8K_IGNORE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]


def gsm8k_strict(generation: str) -> str | None:
    match = GSM8K_STRICT.search(generation) or GSM8K_ANSWER_IS.search(generation)
    return match.group(1) if match else None


def gsm8k_flexible(generation: str) -> str | None:
    """The last number, as lm-eval's RegexFilter(group_select=-1) picks it."""
    matches = GSM8K_FLEXIBLE.findall(generation)
    if not matches:
        return None
    groups = [g for g in matches[-1] if g]
    return groups[0] if groups else None


def gsm8k_normalize(text: str) -> str:
    text = text.strip().lower()
    for pattern in GSM8K_IGNORE:
        text = pattern.sub("", text)
    return text.strip()


def score_gsm8k(generation: str, gold: str) -> dict:
    """{"extracted": {metric: answer}, "strict": bool, "flexible": bool, "math_verify": bool}."""
    strict, flexible = gsm8k_strict(generation), gsm8k_flexible(generation)
    gold_norm = gsm8k_normalize(gold)
    verified, verify_answer = math_verify_answer(
        gold, generation, gold_config=[ExprExtractionConfig()],
        prediction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    return {
        "extracted": {"strict": strict, "flexible": flexible, "math_verify": verify_answer},
        "strict": strict is not None and gsm8k_normalize(strict) == gold_norm,
        "flexible": flexible is not None and gsm8k_normalize(flexible) == gold_norm,
        "math_verify": verified,
    }


# --- math-verify ---------------------------------------------------------------------------------

def math_verify_answer(gold: str, prediction: str, gold_config, prediction_config) -> tuple[bool, str | None]:
    """(verdict, the prediction's parsed answer as a string). The gold is parsed first."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("math-verify must run in the main thread: its timeouts use signal.alarm "
                           "(Math-Verify #50); score in the main thread or a process pool")
    gold_parsed = parse(gold, extraction_config=gold_config)
    if not gold_parsed:
        raise ValueError(f"math-verify cannot parse the gold answer {gold!r}")
    predicted = parse(prediction, extraction_config=prediction_config)
    answer = str(predicted[-1]) if predicted else None
    return (bool(predicted) and verify(gold_parsed, predicted)), answer


# --- MATH ----------------------------------------------------------------------------------------

BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (braces matched), or of `\\boxed X`."""
    start = max(text.rfind(cmd) for cmd in BOX_COMMANDS)
    if start < 0:
        return None
    command = next(cmd for cmd in BOX_COMMANDS if text.startswith(cmd, start))
    rest = text[start + len(command):]
    if rest.startswith(" "):  # `\boxed 5`: the token up to the next space or `$`
        return re.split(r"[\s$]", rest.lstrip(), maxsplit=1)[0] or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return None  # unbalanced braces: no answer


# "The answer is: X" ends MetaMathQA responses; MetaMath's own MATH eval extracts it.
ANSWER_IS = re.compile(r"The answer is:?\s*(.+?)\s*$", re.MULTILINE)
MATH_EXTRACTIONS = ("boxed", "boxed_or_answer_is")


def extract_math_answer(generation: str, extraction: str = "boxed") -> str | None:
    """`boxed`: the last boxed answer. `boxed_or_answer_is`: that, else the last "The answer is X"."""
    if extraction not in MATH_EXTRACTIONS:
        raise ValueError(f"math extraction={extraction!r}; allowed: {', '.join(MATH_EXTRACTIONS)}")
    answer = last_boxed(generation)
    if answer is None and extraction == "boxed_or_answer_is":
        matches = ANSWER_IS.findall(generation)
        answer = matches[-1].rstrip(".").strip("$ ") if matches else None
    return answer


# Minerva's normalisation (appendix D of Lewkowycz et al. 2022), written out here.
MINERVA_SUBSTITUTIONS = [
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
]
MINERVA_REMOVED = [
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots",
    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters",
    "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}",
    "\\text{\ns}", "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ",
    "^{\\circ}", "\\;", ",\\!", "{,}", '"', "\\dots",
]


def normalize_math_answer(answer: str) -> str:
    """Minerva's final-answer normalisation (+ `\\dfrac`, `\\tfrac`, `\\left`, `\\right`: ours)."""
    answer = answer.split("=")[-1]
    # Ours: these change the rendering only; done first so that "ft" removal cannot eat "\left".
    for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", "")):
        answer = answer.replace(old, new)
    for old, new in MINERVA_SUBSTITUTIONS:
        answer = answer.replace(old, new)
    for expr in MINERVA_REMOVED:
        answer = answer.replace(expr, "")
    answer = re.sub(r"(.*?)(\$)(.*?)(\$)(.*)", r"$\3$", answer)
    for command in ("text", "textbf", "overline"):
        answer = re.sub(r"(\\" + command + r"\{)(.*?)(\})", r"\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", r"\2", answer)
    answer = re.sub(r"(frac)([^{])(.)", r"frac{\2}{\3}", answer)   # \frac12 -> \frac{1}{2}
    answer = re.sub(r"(sqrt)([^{])", r"sqrt{\2}", answer)          # \sqrt2 -> \sqrt{2}
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def score_math(generation: str, gold: str, extraction: str = "boxed") -> dict:
    """{"extracted": {...}, "math_verify": bool, "exact_match": bool}; no answer found -> both false."""
    extracted = extract_math_answer(generation, extraction)
    verified, verify_answer = False, None
    if extracted is not None:
        verified, verify_answer = math_verify_answer(
            f"\\boxed{{{gold}}}", f"\\boxed{{{extracted}}}",
            gold_config=[LatexExtractionConfig()],
            prediction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()])
    return {
        "extracted": {"answer": extracted, "math_verify": verify_answer},
        "math_verify": verified,
        "exact_match": extracted is not None and normalize_math_answer(extracted) == normalize_math_answer(gold),
    }
