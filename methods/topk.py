"""Top-k gradient-norm block selection (the AdaGradSelect paper's preliminary finding).

Our exact choice (the paper's details are unknown, ../shared/reference/methods.md §2.4): on a
selection step every block gets gradients (one full backward), the post-accumulate-grad hooks
record each block's gradient L2 norm, the k% blocks with the largest norms are kept and the other
gradients are dropped before the optimizer step, so even the selection step updates only the
chosen blocks. Between selection steps only the chosen blocks get gradients. `select_every: 0`
selects once, at step 0, and keeps that set for the whole run (the static benchmark setting).
"""
from __future__ import annotations

import torch

from methods.blocks import MEASURE, BlockSelectionMethod, blocks_for_percent


class TopK(BlockSelectionMethod):
    def __init__(self, k_percent: float, select_every: int, policy: str = "offload",
                 non_layer: dict[str, str] | None = None, measure_checkpointing: bool = True):
        super().__init__(policy, non_layer, measure_checkpointing)
        if select_every < 0:
            raise ValueError(f"method.select_every must be >= 0 (0 = select once), got {select_every}")
        self.k_percent, self.select_every = k_percent, select_every

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        self.k = blocks_for_percent(self.k_percent, self.n_blocks)
        return model

    def needs_grad_norms(self) -> bool:
        return True

    def top_after_measure(self) -> int:
        return self.k  # choose_from_norms is the top k by norm

    def choose(self, step: int):
        selecting = step == 0 if self.select_every == 0 else step % self.select_every == 0
        return MEASURE if selecting or not self._chosen else self._chosen

    def choose_from_norms(self, step: int, norms: torch.Tensor) -> list[int]:
        self.last_norms = norms
        # stable sort: ties go to the shallower block, so the choice is deterministic
        return torch.argsort(norms, descending=True, stable=True)[: self.k].tolist()
