"""bench/tasks/hendrycks_math.py on the real MATH / MATH-500 files, through conf/task/math.yaml."""
from __future__ import annotations

import json

import pytest

from bench.errors import DataError
from tests.conftest import FIXTURES
from tests.task_helpers import MATH_LOCAL, build_task, no_hub  # noqa: F401 (fixture)


def test_math_rows_fields_and_gold(no_hub):
    task, _ = build_task("math", *MATH_LOCAL)
    train, evals = task.train_examples(), task.eval_sets()
    assert len(train) == 39 and len(evals["math500"]) == 40  # tests/fixtures/README.md
    # fields.answer is null for train: the gold is the solution's last \boxed{}, including the
    # `\boxed 2` form of the two rows whose `answer` field is null (the fixture's lines 36 and 37)
    assert all(ex.gold is not None for ex in train)
    assert sum(ex.gold == "" for ex in train) == 2   # two number-theory rows box nothing: `\boxed{}`
    assert [ex.gold for ex in train if ex.id.endswith(("train.jsonl:36",))] == ["2"]
    assert {ex.meta["subject"] for ex in train} == {"Algebra", "Counting & Probability", "Geometry",
                                                    "Intermediate Algebra", "Number Theory", "Prealgebra", "Precalculus"}
    first = evals["math500"][0]
    assert first.prompt.startswith("Problem:\nConvert the point $(0,3)$") and first.prompt.endswith("\n\nSolution:")
    assert first.gold == "\\left( 3, \\frac{\\pi}{2} \\right)" and first.meta["level"] == 2
    assert "\\boxed{" in first.target and task.stop_strings == ("Problem:",)


def test_math_full_test_split_as_an_eval_source(no_hub):
    task, _ = build_task("math", *MATH_LOCAL, "task.train.limit=1",
                         f"task.eval.math500.path={FIXTURES}/math/test.jsonl", "task.eval.math500.fields.answer=null",
                         "task.eval.math500.fields.subject=type")
    examples = task.eval_sets()["math500"]
    assert len(examples) == 35 and all(ex.gold for ex in examples)


def test_math_scores_the_last_box_with_math_verify(no_hub):
    task, _ = build_task("math", *MATH_LOCAL, "task.train.limit=1", "task.eval.math500.limit=1")
    ex = task.eval_sets()["math500"][0]
    verdict = task.score("So the point is $\\boxed{\\left(3, \\dfrac{\\pi}{2}\\right)}$.", ex)
    assert verdict["accuracy"] and verdict["math_verify"] and verdict["exact_match"]
    assert not task.score("\\boxed{(3, \\pi)}", ex)["accuracy"]


def test_eval_rows_need_a_gold_answer(no_hub, tmp_path):
    path = tmp_path / "nobox.jsonl"
    rows = [{"problem": "p", "solution": "so \\boxed{1}", "level": 1, "subject": "x"},
            {"problem": "p", "solution": "no box here", "level": 1, "subject": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"task\.eval\.math500: 1 rows have no gold answer, first at .*nobox\.jsonl:2"):
        build_task("math", *MATH_LOCAL, "task.train.limit=1", f"task.eval.math500.path={path}",
                   "task.eval.math500.fields.answer=null")


def test_an_eval_source_without_extraction_takes_the_formats_default(no_hub):
    """The train source names no extraction (it is never scored); an eval source that names none
    is scored by MathFormat's own default, the last \\boxed{} (written once, in MathFormat)."""
    from bench.tasks.hendrycks_math import MathFormat

    task, _ = build_task("math", *MATH_LOCAL, "task.train.limit=1", "task.eval.math500.limit=1",
                         "~task.eval.math500.extraction")
    assert task._formats["task.eval.math500"].extraction == MathFormat().extraction == "boxed"
