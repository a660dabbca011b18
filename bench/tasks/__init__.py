"""Tasks: data + prompt + answer extraction (lm-evaluation-harness's shape).

A task is instantiated from `conf/task/<name>.yaml` through Hydra's `_target_`.
"""
from bench.data.examples import Example
from bench.tasks.base import Task

__all__ = ["Example", "Task"]
