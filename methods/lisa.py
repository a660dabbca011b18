"""LISA (arXiv 2403.17919) as LMFlow codes it: every `interval_steps` steps, `n_layers` decoder
layers drawn uniformly without replacement train; embeddings, final norm and lm_head always train
(LMFlow lisa_trainer.py:43-66 toggles only `model.model.layers`).

Optimizer state, `policy` (LISA_POLICIES): `keep` is LMFlow's code (one optimizer over every
parameter for the whole run: every state kept, idle layers' included); `fresh_each_interval` is
the paper's runs (a fresh optimizer each interval, LMFlow #729: every state, E+H's included, is
forgotten at each switch); `offload` and `drop` are the block machinery's other residencies."""
from __future__ import annotations

from typing import Any

from bench.errors import ConfigError
from methods.blocks import POLICIES, BlockSelectionMethod, numpy_rng

RNG_SALT = 0x115A
FRESH_EACH_INTERVAL = "fresh_each_interval"
LISA_POLICIES = (*POLICIES, FRESH_EACH_INTERVAL)


class LISA(BlockSelectionMethod):
    def __init__(self, *, n_layers: int, interval_steps: int, policy: str, non_layer: dict[str, str]):
        if policy not in LISA_POLICIES:
            raise ConfigError(f"method.policy={policy!r}; allowed: {', '.join(LISA_POLICIES)}")
        self.fresh_each_interval = policy == FRESH_EACH_INTERVAL
        # idle layers' state is forgotten at the next switch anyway: never hold it meanwhile
        super().__init__("drop" if self.fresh_each_interval else policy, non_layer)
        if n_layers < 1:
            raise ConfigError(f"method.n_layers must be >= 1, got {n_layers}")
        if interval_steps < 1:
            raise ConfigError(f"method.interval_steps must be >= 1, got {interval_steps}")
        self.n_layers, self.interval_steps = n_layers, interval_steps

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        if self.n_layers > self.n_blocks:
            raise ConfigError(f"method.n_layers={self.n_layers} but the model has {self.n_blocks} blocks")
        self.rng = numpy_rng(ctx.seed, RNG_SALT)
        return model

    def choose(self, step: int) -> list[int]:
        if step % self.interval_steps == 0 or not self._chosen:  # LMFlow switches at step 0 too
            if self._chosen and self.fresh_each_interval:
                self.activation.reset_optimizer_state()
            return self.rng.choice(self.n_blocks, self.n_layers, replace=False).tolist()
        return self._chosen

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
