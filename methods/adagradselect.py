"""AdaGradSelect (arXiv 2512.15764): per step, train k% of the blocks chosen epsilon-greedily.

As far as it is public (../shared/reference/methods.md §2): in epoch 1, with probability
eps_t = eps0 * exp(-lambda * t) explore = take the top-k blocks by gradient norm, otherwise
exploit = draw pi ~ Dirichlet(counts + delta) and take the top-k of pi; from epoch 2 on, exploit
only. counts[b] = how many optimizer steps updated block b. The optimizer states of inactive
blocks are offloaded to CPU (the blog's "dynamic optimizer state residency").

Our choices where the paper is not readable (each a knob): an explore step measures the norms of
*this* step with one full backward and keeps only the top-k gradients (as methods/topk.py does);
counts grow on every step, explore and exploit, in every epoch (`count_updates: explore`: on
explore steps only); t counts optimizer steps from 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.config.errors import ConfigError
from methods.blocks import MEASURE, BlockSelectionMethod, GradNormTopK, numpy_rng

RNG_SALT = 0xADA  # keeps this method's draws apart from other users of the run seed
# Which updates grow the Dirichlet counts: every step's blocks (explore and exploit, our default
# reading of "update counts") or only the blocks an explore step picked by gradient norm.
COUNT_UPDATES = ("all", "explore")


def dirichlet_top_k(counts: np.ndarray, delta: float, k: int, rng: np.random.Generator) -> list[int]:
    """Exploit: pi ~ Dirichlet(counts + delta), the k blocks with the largest pi."""
    pi = rng.dirichlet(counts + delta)
    return np.argsort(-pi, kind="stable")[:k].tolist()


class AdaGradSelect(BlockSelectionMethod):
    def __init__(self, *, k_percent: float, epsilon0: float, epsilon_decay: float | None, delta: float,
                 policy: str, non_layer: dict[str, str], epsilon_end_ratio: float, measure_checkpointing: bool,
                 count_updates: str):
        super().__init__(policy, non_layer, measure=GradNormTopK(k_percent, measure_checkpointing))
        if not 0 <= epsilon0 <= 1:
            raise ConfigError(f"method.epsilon0 must be in [0, 1], got {epsilon0}")
        if epsilon_decay is not None and epsilon_decay < 0:
            raise ConfigError(f"method.epsilon_decay must be >= 0 or null, got {epsilon_decay}")
        if delta <= 0:
            raise ConfigError(f"method.delta must be > 0 (a Dirichlet concentration), got {delta}")
        if not 0 < epsilon_end_ratio <= 1:
            raise ConfigError(f"method.epsilon_end_ratio must be in (0, 1], got {epsilon_end_ratio}")
        if count_updates not in COUNT_UPDATES:
            raise ConfigError(f"method.count_updates={count_updates!r}; allowed: {', '.join(COUNT_UPDATES)}")
        self.count_updates = count_updates
        self.k_percent, self.epsilon0, self.delta = k_percent, epsilon0, delta
        self.epsilon_decay, self.epsilon_end_ratio = epsilon_decay, epsilon_end_ratio
        self._explore, self._epsilon = False, 0.0

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)  # sets self.k from the GradNormTopK declaration
        self.steps_per_epoch = ctx.steps_per_epoch
        # lambda = null: eps falls to eps0 * epsilon_end_ratio by the end of epoch 1
        self.lam = (self.epsilon_decay if self.epsilon_decay is not None
                    else math.log(1 / self.epsilon_end_ratio) / ctx.steps_per_epoch)
        self.counts = np.zeros(self.n_blocks, dtype=np.int64)
        self.rng = numpy_rng(ctx.seed, RNG_SALT)
        return model

    def epsilon(self, step: int) -> float:
        """eps_t in epoch 1; 0 (exploit only) from epoch 2 on."""
        if step >= self.steps_per_epoch:
            return 0.0
        return self.epsilon0 * math.exp(-self.lam * step)

    def choose(self, step: int):
        eps = self._epsilon = self.epsilon(step)
        # one uniform draw per step, even when eps is 0, so the stream of draws does not depend on eps
        self._explore = bool(self.rng.random() < eps)
        if self._explore:
            return MEASURE
        return dirichlet_top_k(self.counts, self.delta, self.k, self.rng)

    def chosen(self, step: int, blocks: list[int]) -> None:
        if self.count_updates == "all" or self._explore:
            self.counts[blocks] += 1

    def step_metrics(self) -> dict[str, Any]:
        return {**super().step_metrics(), "explore": int(self._explore), "epsilon": self._epsilon}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counts": self.counts.tolist(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.rng.bit_generator.state = state["rng"]
