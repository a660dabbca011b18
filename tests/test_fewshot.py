"""bench/tasks/fewshot.py: `task.num_fewshot` solved training examples before each eval question,
in lm-evaluation-harness's gsm8k format ("Question: ...\\nAnswer: <solution>", shots joined by "\\n\\n")."""
from __future__ import annotations

import pytest

from bench.data.examples import Example
from bench.data.prompts import prompt_record
from bench.models.loading import load_tokenizer
from bench.tasks.fewshot import draw_exemplars
from tests.conftest import FIXTURES, HUB_TOKENIZERS, compose_config
from tests.task_helpers import GSM8K_LOCAL, build_task, no_hub  # noqa: F401 - fixture

SMALL = ("task.train.limit=200", "task.eval.gsm8k_test.limit=20")


def fewshot_task(n: int, *overrides: str):
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, *SMALL, f"task.num_fewshot={n}", *overrides)
    return task


def test_each_eval_prompt_has_exactly_n_shots_from_train_in_lm_eval_format(no_hub):
    task = fewshot_task(5)
    train = {ex.id: ex for ex in task.train_examples()}
    assert len(task.fewshot_ids) == 5 and all(i.startswith(f"{FIXTURES}/gsm8k/train.jsonl:") for i in task.fewshot_ids)
    prefix = "".join(train[i].prompt + train[i].target + "\n\n" for i in task.fewshot_ids)
    zero_shot = fewshot_task(0).eval_sets()["gsm8k_test"]
    for ex, plain in zip(task.eval_sets()["gsm8k_test"], zero_shot, strict=True):
        assert ex.prompt == prefix + plain.prompt
        assert ex.prompt.count("Question: ") == 6 and ex.prompt.count("\n\n") >= 5
        shots = ex.prompt.split("\n\nQuestion: ")
        assert len(shots) == 6 and all("\nAnswer: " in s and "#### " in s for s in shots[:5])
    # Training prompts stay zero-shot.
    assert all(ex.prompt.count("Question: ") == 1 for ex in task.train_examples())


def test_the_same_seed_draws_the_same_exemplars_another_seed_others(no_hub):
    first, again = fewshot_task(5), fewshot_task(5)
    assert first.fewshot_ids == again.fewshot_ids
    assert first.eval_sets()["gsm8k_test"][0].prompt == again.eval_sets()["gsm8k_test"][0].prompt
    assert fewshot_task(5, "task.fewshot_seed=7").fewshot_ids != first.fewshot_ids


def test_exemplars_never_come_from_the_eval_split(no_hub):
    # A train source that is the eval file itself: no question of the eval set may become a shot.
    task, _ = build_task("gsm8k", f"task.train.path={FIXTURES}/gsm8k/test.jsonl",
                         f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl",
                         "task.train.limit=30", "task.eval.gsm8k_test.limit=25", "task.num_fewshot=5")
    eval_questions = {f"{FIXTURES}/gsm8k/test.jsonl:{line}" for line in range(1, 26)}
    assert not set(task.fewshot_ids) & eval_questions and len(task.fewshot_ids) == 5
    with pytest.raises(ValueError, match=r"task.num_fewshot=6 exceeds the 5 usable training examples"):
        build_task("gsm8k", f"task.train.path={FIXTURES}/gsm8k/test.jsonl",
                   f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl",
                   "task.train.limit=30", "task.eval.gsm8k_test.limit=25", "task.num_fewshot=6")


def test_draw_ignores_eval_questions_directly():
    train = [Example(id=f"t{i}", prompt=f"Q{i}", target=" A", gold="1") for i in range(10)]
    evals = {"e": [Example(id="e0", prompt="Q3", target="", gold="1")]}
    for seed in range(20):
        assert "t3" not in {ex.id for ex in draw_exemplars(train, evals, 9, seed)}


@HUB_TOKENIZERS
def test_the_record_lists_the_shots(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = fewshot_task(3)
    record = prompt_record(task, load_tokenizer(compose_config("model=tiny-llama3.2").model))
    assert record == {"prompt_format": "plain", "prompt_format_used": "plain", "system_prompt": None,
                      "template_system_prompt": None, "num_fewshot": 3, "fewshot_seed": 1234,
                      "fewshot_ids": task.fewshot_ids}
