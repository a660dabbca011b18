"""AdaGradSelect (arXiv 2512.15764): per step, train k% of the blocks chosen epsilon-greedily.

As far as it is public (../shared/reference/methods.md §2): in epoch 1, with probability
eps_t = eps0 * exp(-lambda * t) explore = take the top-k blocks by gradient norm, otherwise
exploit = draw pi ~ Dirichlet(alpha) from the blocks' update frequencies and take the top-k of pi;
from epoch 2 on, exploit only. The abstract: the strategy "initially balances the exploitation of
important blocks with the exploration of new candidates before transitioning to full exploitation
in later epochs". The optimizer states of inactive blocks are offloaded to CPU (the blog's
"dynamic optimizer state residency").

Which frequencies, and how sharply exploitation focuses, the public text does not say. Two rules
(`method.rule`), each our choice, not from the paper:

- `focus` (the default). The frequencies are the explore steps' verdicts: counts[b] = how many
  explore steps put block b in the gradient-norm top-k. alpha_t = delta + s_t * (counts + tie),
  where tie[b] = block b's summed explore-step gradient norm / the largest such sum, in (0, 1]: it
  orders blocks found important equally often by how large their gradients were (the count
  decides otherwise). s_t = focus_growth ** max(0, t / steps_per_epoch - 1): 1 through epoch 1,
  so pi is spread and exploit steps keep training blocks the explore steps did not pick (the
  "exploration of new candidates"); then x focus_growth per epoch, so pi settles on the blocks
  most often in the top-k ("full exploitation in later epochs"). Exploit picks never grow the
  counts, so no set can feed on itself.
- `update_counts` (the rule before). counts[b] = how many optimizer steps, explore or exploit,
  updated block b; alpha = counts + delta (focus_growth is not used). Self-reinforcing: the first
  exploit draws' blocks gain counts on every step they win, so within ~10 steps one random set
  wins every draw (seen on SmolLM2-135M: 30 blocks, k=8, the set of step 11 trained to the end,
  four of its blocks never in a gradient-norm top-k).

Why `focus` and its focus_growth: a simulation of the SmolLM2-135M shape (30 blocks, k=8, 76
steps/epoch, 3 epochs, eps0=0.3 falling to 0.015 over epoch 1) feeding this class's own
choose/chosen with per-block gradient norms = SmolLM2-135M's measured first-step norms on GSM8K x
per-step noise; conf/method/adagradselect.yaml gives the numbers, and
tests/test_adagradselect.py replays the SmolLM2 shape.

Our choices where the paper is not readable (each a knob): an explore step measures the norms of
*this* step with one full backward and keeps only the top-k gradients (as methods/topk.py does);
t counts optimizer steps from 0.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.errors import ConfigError
from methods.blocks import MEASURE, BlockSelectionMethod, GradNormTopK, numpy_rng

RNG_SALT = 0xADA  # keeps this method's draws apart from other users of the run seed
# What the Dirichlet counts and how it sharpens (the module docstring): `focus` = explore picks
# only, concentration growing per epoch; `update_counts` = every update, fixed concentration.
RULES = ("focus", "update_counts")


def dirichlet_top_k(counts: np.ndarray, delta: float, k: int, rng: np.random.Generator,
                    concentration: float = 1.0) -> list[int]:
    """Exploit: pi ~ Dirichlet(concentration * counts + delta), the k blocks with the largest pi."""
    pi = rng.dirichlet(concentration * counts + delta)
    return np.argsort(-pi, kind="stable")[:k].tolist()


class AdaGradSelect(BlockSelectionMethod):
    def __init__(self, *, k_percent: float, epsilon0: float, epsilon_decay: float | None, epsilon_end_ratio: float,
                 delta: float, rule: str, focus_growth: float, policy: str, non_layer: dict[str, str] | None,
                 measure_checkpointing: bool):
        super().__init__(policy, non_layer, measure=GradNormTopK(k_percent, measure_checkpointing))
        if not 0 <= epsilon0 <= 1:
            raise ConfigError(f"method.epsilon0 must be in [0, 1], got {epsilon0}")
        if epsilon_decay is not None and epsilon_decay < 0:
            raise ConfigError(f"method.epsilon_decay must be >= 0 or null, got {epsilon_decay}")
        if delta <= 0:
            raise ConfigError(f"method.delta must be > 0 (a Dirichlet concentration), got {delta}")
        if not 0 < epsilon_end_ratio <= 1:
            raise ConfigError(f"method.epsilon_end_ratio must be in (0, 1], got {epsilon_end_ratio}")
        if rule not in RULES:
            raise ConfigError(f"method.rule={rule!r}; allowed: {', '.join(RULES)}")
        if not focus_growth >= 1:
            raise ConfigError(f"method.focus_growth must be >= 1 (1 = no focusing), got {focus_growth}")
        self.rule, self.focus_growth = rule, focus_growth
        self.k_percent, self.epsilon0, self.delta = k_percent, epsilon0, delta
        self.epsilon_decay, self.epsilon_end_ratio = epsilon_decay, epsilon_end_ratio
        self._explore, self._epsilon = False, 0.0

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)  # sets self.k from the GradNormTopK declaration
        self.start(self.n_blocks, self.k, ctx.steps_per_epoch, ctx.seed)
        return model

    def start(self, n_blocks: int, k: int, steps_per_epoch: int, seed: int) -> None:
        """The selection state (counts, schedule, generator). `prepare` calls it; so can a
        simulation on synthetic norms, which then plays the measuring steps itself."""
        self.k, self.steps_per_epoch = k, steps_per_epoch
        # lambda = null: eps falls to eps0 * epsilon_end_ratio by the end of epoch 1
        self.lam = (self.epsilon_decay if self.epsilon_decay is not None
                    else math.log(1 / self.epsilon_end_ratio) / steps_per_epoch)
        self.counts = np.zeros(n_blocks, dtype=np.int64)
        self.norm_sums = np.zeros(n_blocks)  # summed explore-step gradient norms (the tie-break)
        self.rng = numpy_rng(seed, RNG_SALT)

    def epsilon(self, step: int) -> float:
        """eps_t in epoch 1; 0 (exploit only) from epoch 2 on."""
        if step >= self.steps_per_epoch:
            return 0.0
        return self.epsilon0 * math.exp(-self.lam * step)

    def concentration(self, step: int) -> float:
        """s_t, the weight of the counts in the Dirichlet: 1 in epoch 1, then x focus_growth per epoch."""
        if self.rule == "update_counts":
            return 1.0
        return self.focus_growth ** max(0.0, step / self.steps_per_epoch - 1)

    def evidence(self) -> np.ndarray:
        """What the Dirichlet weighs: the counts, and under `focus` the summed-norm tie-break."""
        if self.rule == "update_counts" or not self.norm_sums.any():
            return self.counts
        return self.counts + self.norm_sums / self.norm_sums.max()

    def choose(self, step: int):
        eps = self._epsilon = self.epsilon(step)
        # one uniform draw per step, even when eps is 0, so the stream of draws does not depend on eps
        self._explore = bool(self.rng.random() < eps)
        if self._explore:
            return MEASURE
        return dirichlet_top_k(self.evidence(), self.delta, self.k, self.rng, self.concentration(step))

    def chosen(self, step: int, blocks: list[int]) -> None:
        if self.rule == "update_counts" or self._explore:
            self.counts[blocks] += 1
        if self._explore:
            self.norm_sums += self.last_norms.double().numpy()

    def step_metrics(self) -> dict[str, Any]:
        metrics = {**super().step_metrics(), "explore": int(self._explore), "epsilon": self._epsilon,
                   "concentration": self.concentration(self._step)}
        if self._explore:  # the measurement this step's choice came from, one norm per block
            metrics["block_grad_norms"] = [float(x) for x in self.last_norms.tolist()]
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counts": self.counts.tolist(), "norm_sums": self.norm_sums.tolist(),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.norm_sums = np.asarray(state["norm_sums"], dtype=np.float64)
        self.rng.bit_generator.state = state["rng"]
