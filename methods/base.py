"""The method interface: small on purpose (see ../shared/DESIGN.md, "A method")."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class MethodContext:
    """What a method may know about the run it is part of."""

    device: torch.device
    total_steps: int
    steps_per_epoch: int  # optimizer steps per pass over the training set
    gradient_checkpointing: bool
    seed: int
    # A fresh training batch of n examples, for methods that probe the loss (IST).
    sample_batch: Callable[[int], dict[str, torch.Tensor]] | None = None
    # The training autocast ("bf16" | "fp32"), for methods that run their own forward passes (IST).
    precision: str = "fp32"
    # Micro-batches per optimizer step (gradients accumulate over that many backward passes).
    grad_accum: int = 1


class Method:
    """Full fine-tuning behaviour by default; subclasses override what they change.

    Call order, per run: `prepare` (before the optimizer exists) -> `trainable_parameters`
    (what the optimizer holds: every parameter that may *ever* train) -> `attach_optimizer`;
    then per optimizer step: `on_step_start` -> forward/backward (all micro-batches) ->
    `after_backward` -> clip + optimizer step -> `after_step`.
    """

    trains = True  # False: the run only evaluates (methods/none.py)
    # True: the same parameters train on every step and the method adds no hooks, no requires_grad
    # flips and no forward of its own, so `train.cuda_graphs` may capture the decoder once and replay
    # it (bench/compiled.py DecoderGraph: a hook would run only while capturing). Off unless a method says so
    # (full, lora); methods that switch their set are refused, no re-capture per set (bench/config/checks.py).
    cuda_graph_safe = False

    def prepare(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        self.ctx = ctx
        return model

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def on_step_start(self, step: int, model: torch.nn.Module) -> None:
        pass

    def after_backward(self, step: int, model: torch.nn.Module) -> None:
        pass

    def after_step(self, step: int, model: torch.nn.Module) -> None:
        pass

    def step_metrics(self) -> dict[str, Any]:
        """Per-step numbers for metrics.jsonl (e.g. `active_blocks`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
