"""LISA (arXiv 2403.17919) as LMFlow codes it: every `interval_steps` steps, `n_layers` decoder
layers drawn uniformly without replacement train; embeddings, final norm and lm_head always train
(LMFlow lisa_trainer.py:43-66 toggles only `model.model.layers`)."""
from __future__ import annotations

from typing import Any

from methods.blocks import BlockSelectionMethod, numpy_rng

RNG_SALT = 0x115A


class LISA(BlockSelectionMethod):
    def __init__(self, n_layers: int, interval_steps: int, policy: str = "drop",
                 non_layer: dict[str, str] | None = None):
        super().__init__(policy, non_layer)
        if n_layers < 1:
            raise ValueError(f"method.n_layers must be >= 1, got {n_layers}")
        if interval_steps < 1:
            raise ValueError(f"method.interval_steps must be >= 1, got {interval_steps}")
        self.n_layers, self.interval_steps = n_layers, interval_steps

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        if self.n_layers > self.n_blocks:
            raise ValueError(f"method.n_layers={self.n_layers} but the model has {self.n_blocks} blocks")
        self.rng = numpy_rng(ctx.seed, RNG_SALT)
        return model

    def choose(self, step: int) -> list[int]:
        if step % self.interval_steps == 0 or not self._chosen:  # LMFlow switches at step 0 too
            return self.rng.choice(self.n_blocks, self.n_layers, replace=False).tolist()
        return self._chosen

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
