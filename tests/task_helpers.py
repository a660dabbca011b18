"""Shared by the task tests: real task configs composed by Hydra with local sources, hub blocked."""
from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from tests.conftest import FIXTURES, compose_config

GSM8K_LOCAL = (f"task.train.path={FIXTURES}/gsm8k/train.jsonl",
               f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl")
MATH_LOCAL = (f"task.train.path={FIXTURES}/math/train.jsonl",
              f"task.eval.math500.path={FIXTURES}/math/math500_test.jsonl")


def build_task(task: str, *overrides: str):
    """(task, composed config). Hydra wraps errors of the target; the test sees the original."""
    cfg = compose_config(f"task={task}", *overrides)
    try:
        return instantiate(cfg.task), cfg
    except InstantiationException as err:
        raise err.__cause__ from None


@pytest.fixture
def no_hub(monkeypatch):
    """HF_HUB_OFFLINE=1 and datasets.load_dataset replaced by a failure: a local source that
    reaches for the hub fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def fail(*args, **kwargs):
        raise AssertionError(f"hub access attempted: load_dataset{args} {kwargs}")

    monkeypatch.setattr(datasets, "load_dataset", fail)
