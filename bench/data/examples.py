"""What every batching reads: a tokenized training example and the label that carries no loss."""
from __future__ import annotations

from dataclasses import dataclass

# The label of a position whose token carries no loss (the prompt, padding). The value that
# torch.nn.functional.cross_entropy and HF's ForCausalLMLoss ignore by default.
IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
