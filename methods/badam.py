"""BAdam (arXiv 2404.02827; Ledzy/BAdam block_optim.py): one block trains at a time, the active
block switches every `switch_every` steps, and every optimizer state is reset at each switch
(block_optim.py:435). The order is BAdam's `switch_mode`: random (a reshuffle per pass over the
blocks), ascending, descending or fixed (block_optim.py:530-543)."""
from __future__ import annotations

from typing import Any

from methods.blocks import BlockSelectionMethod, numpy_rng

SWITCH_MODES = ("random", "ascending", "descending", "fixed")
RNG_SALT = 0xBADA


class BAdam(BlockSelectionMethod):
    def __init__(self, switch_every: int, switch_mode: str, policy: str = "drop",
                 non_layer: dict[str, str] | None = None, fixed_block: int = 0):
        super().__init__(policy, non_layer)
        if switch_every < 1:
            raise ValueError(f"method.switch_every must be >= 1, got {switch_every}")
        if switch_mode not in SWITCH_MODES:
            raise ValueError(f"method.switch_mode={switch_mode!r}; allowed: {', '.join(SWITCH_MODES)}")
        self.switch_every, self.switch_mode, self.fixed_block = switch_every, switch_mode, fixed_block
        self._order: list[int] = []  # blocks still to visit in this pass

    def prepare(self, model, ctx):
        model = super().prepare(model, ctx)
        if not 0 <= self.fixed_block < self.n_blocks:
            raise ValueError(f"method.fixed_block={self.fixed_block}; allowed: 0..{self.n_blocks - 1}")
        self.rng = numpy_rng(ctx.seed, RNG_SALT)
        return model

    def _next_block(self) -> int:
        if self.switch_mode == "fixed":
            return self.fixed_block
        if not self._order:
            if self.switch_mode == "random":
                self._order = self.rng.permutation(self.n_blocks).tolist()
            elif self.switch_mode == "ascending":
                self._order = list(range(self.n_blocks))
            else:
                self._order = list(reversed(range(self.n_blocks)))
        return self._order.pop(0)

    def choose(self, step: int) -> list[int]:
        if step % self.switch_every == 0 or not self._chosen:
            if self._chosen:
                self.activation.reset_optimizer_state()  # block_optim.py:435
            return [self._next_block()]
        return self._chosen

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "order": list(self._order), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._order = list(state["order"])
        self.rng.bit_generator.state = state["rng"]
