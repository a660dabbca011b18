"""Top-k gradient-norm block selection (the AdaGradSelect paper's preliminary finding).

Our exact choice (the paper's details are unknown, ../shared/reference/methods.md §2.4): on a
selection step every block gets gradients (one full backward), the post-accumulate-grad hooks
record each block's gradient L2 norm, the k% blocks with the largest norms are kept and the other
gradients are dropped before the optimizer step, so even the selection step updates only the
chosen blocks. Between selection steps only the chosen blocks get gradients. `select_every: 0`
selects once, at step 0, and keeps that set for the whole run (the static benchmark setting).
"""
from __future__ import annotations

from bench.errors import ConfigError
from methods.blocks import MEASURE, BlockSelectionMethod, GradNormTopK


class TopK(BlockSelectionMethod):
    def __init__(self, *, k_percent: float, select_every: int, policy: str, non_layer: dict[str, str],
                 measure_checkpointing: bool):
        super().__init__(policy, non_layer, measure=GradNormTopK(k_percent, measure_checkpointing))
        if select_every < 0:
            raise ConfigError(f"method.select_every must be >= 0 (0 = select once), got {select_every}")
        self.k_percent, self.select_every = k_percent, select_every

    def choose(self, step: int):
        selecting = step == 0 if self.select_every == 0 else step % self.select_every == 0
        return MEASURE if selecting or not self._chosen else self._chosen
