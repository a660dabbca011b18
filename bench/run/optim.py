"""Optimizer and learning-rate schedule, built from `cfg.train`."""
from __future__ import annotations

import math

import torch

from bench.config.schema import LR_SCALINGS


def scaled_schedule(train_cfg, tokens_ratio: float) -> dict:
    """The lr and warm-up steps a run uses: `train.lr` and `train.warmup_steps` unless
    `train.lr_scaling` scales them by `tokens_ratio` (tokens per step over the default's). A scaled
    warm-up spans the same number of tokens as the default one (at least one step)."""
    scaling = train_cfg.lr_scaling
    scaled = scaling != "none"
    return {"lr_scaling": scaling, "tokens_ratio": tokens_ratio,
            "lr": train_cfg.lr * tokens_ratio ** LR_SCALINGS[scaling],
            "warmup_steps": max(1, round(train_cfg.warmup_steps / tokens_ratio)) if scaled and train_cfg.warmup_steps
            else train_cfg.warmup_steps}


def build_optimizer(params: list[torch.nn.Parameter], train_cfg, device: torch.device,
                    lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over `params` at `lr` (default `train.lr`; a scaled run passes scaled_schedule's)."""
    # No weight decay on norms and biases (1-D tensors), as nanoGPT and torchtune do.
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": train_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel exists for CUDA and CPU tensors in torch >= 2.4: one launch per step.
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=train_cfg.lr if lr is None else lr, betas=tuple(train_cfg.betas), fused=fused)


def clip_gradients(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm to `max_norm`; returns the norm before clipping.

    With fused AdamW the clip factor goes to the optimizer's own kernel (`grad_scale`, the hook
    torch's GradScaler uses: the kernel divides each gradient by it as it reads it), so the
    gradients are read once for the norm and never rewritten: `clip_grad_norm_` spends a second
    read-and-write pass over every gradient (measured: docs/performance-analysis.md, "Measurements
    behind choices in the code").
    Any other optimizer gets `clip_grad_norm_` itself.
    """
    with_grad = [p for p in params if p.grad is not None]
    if not optimizer.defaults.get("fused"):
        return torch.nn.utils.clip_grad_norm_(with_grad, max_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad], foreach=True)
    # The factor clip_grad_norm_ multiplies by (same eps), as the divisor the kernel expects.
    scale = (norm / max_norm + 1e-6 / max_norm).clamp(min=1.0)
    optimizer.grad_scale = scale.to(torch.float32)
    return norm


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg, total_steps: int, warmup_steps: int | None = None):
    schedule = train_cfg.schedule
    warmup = train_cfg.warmup_steps if warmup_steps is None else warmup_steps
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
