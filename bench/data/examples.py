"""The examples data flows as: a task's prompt/target pair, its tokenized form for training, and the
label that carries no loss. Tasks (bench/tasks) make Examples; batching and evaluation read them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The label of a position whose token carries no loss (the prompt, padding). The value that
# torch.nn.functional.cross_entropy and HF's ForCausalLMLoss ignore by default.
IGNORE_INDEX = -100


@dataclass
class Example:
    """One prompt/target pair. `prompt` is the user-visible question text, already in the task's
    plain template; `target` is what the model should generate (the only loss-bearing tokens
    unless `train.loss_on_prompt`); `gold` is the reference answer that scoring compares with."""

    id: str
    prompt: str
    target: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
