"""Optimizer and learning-rate schedule, built from `cfg.train`."""
from __future__ import annotations

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def build_optimizer(params: list[torch.nn.Parameter], train_cfg, device: torch.device) -> torch.optim.AdamW:
    # No weight decay on norms and biases (1-D tensors), as nanoGPT and torchtune do.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel exists for CUDA and CPU tensors in torch >= 2.4: one launch per step.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=train_cfg.lr, betas=tuple(train_cfg.betas), fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg, total_steps: int):
    schedule, warmup = train_cfg.schedule, train_cfg.warmup_steps
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule={schedule!r}; allowed: {', '.join(SCHEDULES)}")
    floor = train_cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        if schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
