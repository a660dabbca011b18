"""bench/tasks/metamathqa.py and the papers' protocol preset (conf/task/metamathqa.yaml):
MetaMathQA rows (no local copy in ../shared/data: a small hand-written file) -> GSM8K + MATH-500."""
from __future__ import annotations

import json

import pytest

from bench.errors import DataError
from tests.conftest import FIXTURES
from tests.task_helpers import build_task, no_hub  # noqa: F401 (fixture)

ROWS = [
    {"query": "What is 2 + 3?", "response": "2 + 3 = 5.\nThe answer is: 5", "type": "GSM_AnsAug"},
    {"query": "Simplify $\\frac{2}{4}$.", "response": "We get $\\boxed{\\frac{1}{2}}$.\nThe answer is: \\frac{1}{2}",
     "type": "MATH_Rephrased"},
]
EVAL_LOCAL = (f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl",
              f"task.eval.math500.path={FIXTURES}/math/math500_test.jsonl")


@pytest.fixture
def metamath_file(tmp_path):
    path = tmp_path / "metamathqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_metamathqa_protocol(no_hub, metamath_file):
    task, _ = build_task("metamathqa", f"task.train.path={metamath_file}", *EVAL_LOCAL)
    train = task.train_examples()
    assert [ex.prompt for ex in train] == ["Question: What is 2 + 3?\nAnswer:", "Question: Simplify $\\frac{2}{4}$.\nAnswer:"]
    assert train[0].target == " 2 + 3 = 5.\nThe answer is: 5" and train[0].gold == "5"
    assert train[1].meta["type"] == "MATH_Rephrased"
    evals = task.eval_sets()
    assert {name: len(ex) for name, ex in evals.items()} == {"gsm8k_test": 40, "math500": 40}
    # MetaMathQA-style answers are scored on both sets: "The answer is: N" / the box, else that line.
    assert task.score("so 18.\nThe answer is: 18", evals["gsm8k_test"][0])["strict"]
    math_ex = evals["math500"][0]
    assert task.score("The answer is: \\left( 3, \\frac{\\pi}{2} \\right)", math_ex)["accuracy"]
    assert task.primary_metric == "accuracy"


def test_metamathqa_missing_field(no_hub, tmp_path):
    path = tmp_path / "renamed.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"renamed\.jsonl:1: missing field 'query' \(fields\.query\); "
                                        r"the row has fields \['answer', 'question'\]"):
        build_task("metamathqa", f"task.train.path={path}", *EVAL_LOCAL)


def test_metamathqa_is_train_only(no_hub, metamath_file):
    with pytest.raises(ValueError, match=r"task\.eval\.math500\.kind='metamathqa' is a training set only"):
        build_task("metamathqa", f"task.train.path={metamath_file}", *EVAL_LOCAL,
                   "task.eval.math500.kind=metamathqa")
