"""BAdam (arXiv 2404.02827; Ledzy/BAdam block_optim.py): one block trains at a time, the active
block switches every `switch_every` steps, and every optimizer state is reset at each switch
(block_optim.py:435). The order is BAdam's `switch_mode`: random (a reshuffle per pass over the
blocks), ascending, descending or fixed (block_optim.py:530-543).

Precision (`precision_scheme`, PRECISION_SCHEMES): `badam` is BAdam's own scheme. The model's
weights are bf16 (block_optim.py warns when a weight is fp32), and only the active block has an
fp32 master copy, created from its bf16 weights at each switch (`_switch_trainable_params_single_gpu`).
Each step, the bf16 gradient is cast to fp32 for the master (`_grad_to_hp`), Adam steps the master,
and the master is copied back to bf16 (`_update_param`). We do it without a second optimizer: after
backward, each active parameter's `.data` becomes its fp32 master and its gradient fp32, so the
loop's clipping and fused AdamW see fp32 tensors and create fp32 state; after the step `.data` is
the master rounded to bf16 again. `fp32`: every weight fp32, as the other methods train.
"""
from __future__ import annotations

from typing import Any

import torch

from bench.errors import ConfigError
from methods.blocks import BlockSelectionMethod, numpy_rng

SWITCH_MODES = ("random", "ascending", "descending", "fixed")
PRECISION_SCHEMES = ("badam", "fp32")
RNG_SALT = 0xBADA


class BAdam(BlockSelectionMethod):
    def __init__(self, *, switch_every: int, switch_mode: str, policy: str, non_layer: dict[str, str],
                 fixed_block: int, precision_scheme: str):
        super().__init__(policy, non_layer)
        if precision_scheme not in PRECISION_SCHEMES:
            raise ConfigError(f"method.precision_scheme={precision_scheme!r}; allowed: {', '.join(PRECISION_SCHEMES)}")
        self.precision_scheme = precision_scheme
        self.masters: dict[torch.nn.Parameter, torch.Tensor] = {}  # active parameters' fp32 copies
        self._swapped: list[torch.nn.Parameter] = []  # parameters whose .data is their master now
        if switch_every < 1:
            raise ConfigError(f"method.switch_every must be >= 1, got {switch_every}")
        if switch_mode not in SWITCH_MODES:
            raise ConfigError(f"method.switch_mode={switch_mode!r}; allowed: {', '.join(SWITCH_MODES)}")
        self.switch_every, self.switch_mode, self.fixed_block = switch_every, switch_mode, fixed_block
        self._order: list[int] = []  # blocks still to visit in this pass

    def prepare(self, model, ctx):
        if self.precision_scheme == "badam":
            model = model.to(torch.bfloat16)  # in place: the parameters keep their identity
        model = super().prepare(model, ctx)
        if not 0 <= self.fixed_block < self.n_blocks:
            raise ConfigError(f"method.fixed_block={self.fixed_block}; allowed: 0..{self.n_blocks - 1}")
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
                self.masters.clear()  # the next block's masters start from its bf16 weights
            return [self._next_block()]
        return self._chosen

    # --- BAdam's precision scheme ----------------------------------------------------------------
    def _trained_parameters(self) -> list[torch.nn.Parameter]:
        return [p for i in self._chosen for p in self.layout.blocks[i].params] + list(self.layout.always)

    def after_backward(self, step: int, model: torch.nn.Module) -> None:
        super().after_backward(step, model)
        if self.precision_scheme != "badam":
            return
        for p in self._trained_parameters():
            if p.grad is None:
                continue
            master = self.masters.get(p)
            if master is None:
                master = self.masters[p] = p.detach().float()  # block_optim.py param.clone().float()
            grad = p.grad.float()  # block_optim.py _grad_to_hp
            p.grad = None  # a gradient must match its parameter's dtype
            p.data = master
            p.grad = grad
            self._swapped.append(p)

    def after_step(self, step: int, model: torch.nn.Module) -> None:
        for p in self._swapped:  # block_optim.py _update_param: the stepped master, rounded to bf16
            p.data = self.masters[p].to(torch.bfloat16)
        self._swapped = []

    def _index(self) -> dict[int, tuple[str, int, int]]:
        blocks = self.layout.blocks
        index = {id(p): ("block", b, j) for b, block in enumerate(blocks) for j, p in enumerate(block.params)}
        index.update({id(p): ("always", 0, j) for j, p in enumerate(self.layout.always)})
        return index

    def _parameter(self, key: tuple[str, int, int]) -> torch.nn.Parameter:
        kind, b, j = key
        return self.layout.blocks[b].params[j] if kind == "block" else self.layout.always[j]

    def _precision_state(self) -> dict[str, Any]:
        """The masters and their fp32 optimizer state: the optimizer's own state_dict is loaded
        into the bf16 parameters, and torch casts loaded state to the parameter's dtype."""
        index = self._index()
        return {"masters": {index[id(p)]: m.detach().cpu().clone() for p, m in self.masters.items()},
                "optimizer": {index[id(p)]: {k: v.detach().cpu().clone() if torch.is_tensor(v) else v
                                             for k, v in self.optimizer.state[p].items()}
                              for p in self.masters if p in self.optimizer.state}}

    def _load_precision_state(self, state: dict[str, Any]) -> None:
        device = self.ctx.device
        self.masters = {self._parameter(k): m.to(device) for k, m in state["masters"].items()}
        for key, saved in state["optimizer"].items():
            p = self._parameter(key)
            current = self.optimizer.state[p]
            for k, v in saved.items():  # `step` keeps the device the optimizer gave it
                current[k] = v.to(current[k].device) if torch.is_tensor(v) and torch.is_tensor(current.get(k)) else v

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "order": list(self._order), "rng": self.rng.bit_generator.state}
        return {**state, "precision": self._precision_state()} if self.precision_scheme == "badam" else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._order = list(state["order"])
        self.rng.bit_generator.state = state["rng"]
        if self.precision_scheme == "badam":
            self._load_precision_state(state["precision"])
