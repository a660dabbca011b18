"""bench/tasks/reasoning.py: the config rules of a task built from sources."""
from __future__ import annotations

import pytest

from tests.task_helpers import GSM8K_LOCAL, build_task, no_hub  # noqa: F401 (fixture)


def test_unknown_kind_names_the_allowed_ones(no_hub):
    with pytest.raises(ValueError, match=r"task\.train\.kind='gsm9k'; allowed: gsm8k, math, metamathqa"):
        build_task("gsm8k", *GSM8K_LOCAL, "task.train.kind=gsm9k")


def test_accuracy_must_be_a_metric_of_the_kind(no_hub):
    with pytest.raises(ValueError, match=r"task\.eval\.gsm8k_test\.accuracy='exact_match'; allowed for kind gsm8k: "
                                         r"strict, flexible, math_verify"):
        build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=1", "task.eval.gsm8k_test.accuracy=exact_match")


def test_prompt_template_needs_the_question(no_hub):
    with pytest.raises(ValueError, match=r"task\.prompt_template must contain \{question\}"):
        build_task("gsm8k", *GSM8K_LOCAL, "task.prompt_template=Q:")


def test_eval_max_new_tokens_follows_the_task(no_hub):
    _, cfg = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=1")
    assert cfg.eval.max_new_tokens == 320
    _, cfg = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=1", "eval.max_new_tokens=32")
    assert cfg.eval.max_new_tokens == 32
    from tests.conftest import compose_config
    assert compose_config().eval.max_new_tokens == 6  # the arithmetic default is unchanged
