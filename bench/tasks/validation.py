"""The validation split: a seeded part of a task's training file, held out and never trained on.

`task.validation_size` examples are drawn with `task.validation_seed` from the training examples
that have a gold answer (a MATH train row without a `\\boxed{}` cannot be scored), and removed from
the training set; they keep their file order. `eval.split=validation` scores a run on them instead
of the test set, so a learning rate can be chosen without looking at the test set (bench/protocol.py).
The record names the split by its size, seed and the sha256 of the held-out examples' text (prompt,
target, gold: the same on every machine, whether the rows came from a local file or the hub).
"""
from __future__ import annotations

import hashlib
import json
import random

from bench.errors import ConfigError
from bench.data.examples import Example


def hold_out(examples: list[Example], size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(the training examples left, the held-out ones): `size` drawn with `seed` from those with a gold."""
    if not isinstance(size, int) or size < 0:
        raise ConfigError(f"task.validation_size must be an integer >= 0 (0: no validation split), got {size!r}")
    if size == 0:
        return list(examples), []
    candidates = [i for i, ex in enumerate(examples) if ex.gold]
    if size >= len(candidates):
        raise ConfigError(f"task.validation_size={size} must be smaller than the {len(candidates)} training "
                          f"examples with a gold answer (something must be left to train on)")
    held = set(random.Random(seed).sample(candidates, size))
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def validation_digest(examples: list[Example]) -> str | None:
    """sha256 of the held-out examples' text, in order; None when there are none."""
    if not examples:
        return None
    text = json.dumps([[ex.prompt, ex.target, ex.gold] for ex in examples], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()
