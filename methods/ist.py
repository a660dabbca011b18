"""IST, Importance-aware Sparse Tuning (Yao et al., EMNLP 2024 Findings), after the official code
(antgroup/importance-aware-sparse-tuning-IST-paper ist.py, ../shared/reference/methods.md §1.2).

LoRA (methods/lora.py, composed) provides the adapters; each decoder layer's adapter parameters
form one block. Every optimizer step, int(update_fraction*L) layers drawn with probability
proportional to sigmoid(-score) train (ist.py:71-74, 137, 165-182). Every `update_interval` steps
(not at step 0, ist.py:90) the scores are updated from `rollouts` eval-mode, no-grad losses on one
training batch, each with a distinct set of int(suppress_fraction*L) layers drawn by sigmoid(score)
whose LoRA scaling is multiplied by `suppression_factor` (ist.py:104-116):
    r_k = exp(-loss_k) - mean_j exp(-loss_j);  score[i] += r_k * p_i * (1 - p_i) * rl_lr  for i in S_k
with p = sigmoid(score) taken once before the update (ist.py:118-131). A high score means
"suppressing this layer does not hurt", so it is rarely trained.

Port to current peft: LoraLayer.scaling is a dict {adapter: alpha/r}; every entry is saved before
a rollout and written back exactly afterwards (no recomputation, so rsLoRA scalings survive).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.lora import LoraLayer

from bench.loss import chunked_mean_loss
from bench.runtime import autocast
from bench.errors import ConfigError
from methods.blocks import BlockSelectionMethod
from methods.lora import LoRA

IST_SEED_SALT = 0x157


class IST(BlockSelectionMethod):
    def __init__(self, *, lora: LoRA, update_fraction: float, suppress_fraction: float, rollouts: int,
                 rl_lr: float, suppression_factor: float, update_interval: int, estimation_batch_size: int,
                 policy: str):
        # Only the decoder layers' adapters train: lm_head/embeddings carry no LoRA here.
        super().__init__(policy, non_layer={})
        if not isinstance(lora, LoRA):
            raise ConfigError(f"method.lora must instantiate methods.lora.LoRA, got {type(lora).__name__}")
        checks = {"method.update_fraction": 0 < update_fraction <= 1, "method.suppress_fraction": 0 < suppress_fraction <= 1,
                  "method.rollouts": rollouts >= 1, "method.update_interval": update_interval >= 1,
                  "method.estimation_batch_size": estimation_batch_size >= 1,
                  "method.suppression_factor": 0 <= suppression_factor <= 1}
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{key} is out of range: {locals()[key.split('.')[1]]}")
        self.lora = lora
        self.update_fraction, self.suppress_fraction = update_fraction, suppress_fraction
        self.rollouts, self.rl_lr, self.suppression_factor = rollouts, rl_lr, suppression_factor
        self.update_interval, self.estimation_batch_size = update_interval, estimation_batch_size
        self.last_update: dict[str, Any] | None = None  # sets, losses, rewards of the latest update
        self._updated = False

    def prepare(self, model, ctx):
        model = self.lora.prepare(model, ctx)  # peft wrap: base weights frozen, adapters trainable
        model = super().prepare(model, ctx)   # blocks = each decoder layer's adapter parameters
        n = self.layout.n_layers
        self.n_update = int(n * self.update_fraction)         # ist.py:42
        self.n_suppress = int(n * self.suppress_fraction)     # ist.py:43
        if self.n_update < 1 or self.n_suppress < 1:
            raise ConfigError(f"{n} layers: int({n}*update_fraction)={self.n_update} and int({n}*suppress_fraction)="
                             f"{self.n_suppress} must both be >= 1 (method.update_fraction / method.suppress_fraction)")
        if math.comb(n, self.n_suppress) < self.rollouts:
            raise ConfigError(f"method.rollouts={self.rollouts} distinct suppression sets of {self.n_suppress} "
                             f"out of {n} layers do not exist")
        if ctx.sample_batch is None:
            raise ValueError("IST needs MethodContext.sample_batch (training batches for importance estimation)")
        self.lora_modules = [[m for m in layer.modules() if isinstance(m, LoraLayer)] for layer in self.layout.layers]
        self.scores = torch.zeros(n)                          # ist.py:33
        self.generator = torch.Generator().manual_seed(ctx.seed * 1000 + IST_SEED_SALT)
        return model

    # --- selection -----------------------------------------------------------------------------
    def _sample(self, weights: torch.Tensor, num: int) -> list[int]:
        return sorted(torch.multinomial(weights, num, replacement=False, generator=self.generator).tolist())

    def choose(self, step: int) -> list[int]:
        return self._sample(torch.sigmoid(-self.scores), self.n_update)  # ist.py:71-74, every step

    def on_step_start(self, step: int, model: torch.nn.Module) -> None:
        self._updated = step > 0 and step % self.update_interval == 0  # ist.py:90
        if self._updated:
            self.update_importance(model)
        super().on_step_start(step, model)

    # --- importance estimation -----------------------------------------------------------------
    def update_importance(self, model: torch.nn.Module) -> None:
        batch = {k: v.to(self.ctx.device) for k, v in self.ctx.sample_batch(self.estimation_batch_size).items()}
        sets: list[list[int]] = []
        losses: list[float] = []
        for _ in range(self.rollouts):
            suppressed = self._sample(torch.sigmoid(self.scores), self.n_suppress)
            while suppressed in sets:  # ist.py:106-107: every rollout suppresses a new set
                suppressed = self._sample(torch.sigmoid(self.scores), self.n_suppress)
            sets.append(suppressed)
            losses.append(self.rollout_loss(model, suppressed, batch))
        self.apply_update(sets, losses)

    def rollout_loss(self, model: torch.nn.Module, suppressed: list[int], batch: dict[str, torch.Tensor]) -> float:
        """Eval-mode, no-grad loss with the LoRA branches of `suppressed` layers scaled down."""
        saved = [[dict(m.scaling) for m in modules] for modules in self.lora_modules]
        was_training = model.training
        try:
            for i in suppressed:
                for m, scaling in zip(self.lora_modules[i], saved[i]):
                    for adapter, value in scaling.items():
                        m.scaling[adapter] = value * self.suppression_factor
            model.eval()
            with torch.inference_mode(), autocast(self.ctx.device, self.ctx.precision):
                # HF's loss would hold estimation_batch_size x seq x vocab fp32 logits, which set
                # IST's peak memory (Phi-4-mini: 16 x 512 x 200,064 x 4 B = 6.1 GiB a copy)
                return chunked_mean_loss(model, batch)
        finally:
            model.train(was_training)
            for modules, scalings in zip(self.lora_modules, saved):
                for m, scaling in zip(modules, scalings):
                    m.scaling.update(scaling)  # the saved floats themselves: exact restore

    def apply_update(self, sets: list[list[int]], losses: list[float]) -> None:
        """The score update of ist.py:118-131 (p computed once, before the loop)."""
        rewards = torch.exp(-torch.tensor(losses, dtype=torch.float64))
        rewards = rewards - rewards.mean()
        p = torch.sigmoid(self.scores.double())
        scores = self.scores.double()
        for reward, suppressed in zip(rewards, sets):
            idx = torch.tensor(suppressed)
            scores[idx] += reward * p[idx] * (1 - p[idx]) * self.rl_lr
        self.scores = scores.float()
        self.last_update = {"sets": sets, "losses": losses, "rewards": rewards.tolist()}

    # --- records and resume --------------------------------------------------------------------
    def step_metrics(self) -> dict[str, Any]:
        return {**super().step_metrics(), "importance_updated": int(self._updated)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "scores": self.scores.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.scores = state["scores"].clone()
        self.generator.set_state(state["generator"])
