"""The training loop: batch -> forward -> backward -> method hooks -> clip -> step. One screen."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from bench.data.batching import IGNORE_INDEX, BatchStream
from bench.loss import training_loss
from bench.run.observers import StepTimer
from bench.runtime import autocast
from bench.run.optim import clip_gradients
from methods.base import Method


@dataclass
class TrainState:
    model: torch.nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: BatchStream
    step: int = 0  # optimizer steps done


def train(state: TrainState, train_cfg, device: torch.device, precision: str, total_steps: int,
          timer: StepTimer, on_step: Callable[[int, dict], None]) -> float:
    """Run optimizer steps `state.step .. total_steps`; returns the last step's loss."""
    model, method, optimizer = state.model, state.method, state.optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(state.step, total_steps), desc="train", initial=state.step, total=total_steps,
               dynamic_ncols=True, mininterval=1.0)
    for step in bar:
        timer.start()
        method.on_step_start(step, model)
        micro_batches = [next(state.batches) for _ in range(train_cfg.grad_accum)]
        # Token-weighted loss over the whole accumulation window: every loss-bearing token
        # counts once, whatever micro-batch it sits in (labels shift by one inside the model).
        loss_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
        loss = torch.zeros((), device=device)
        for batch in micro_batches:
            with autocast(device, precision):
                # train.fast_path: none = HF's own loss; chunked_ce = no full-vocab logits.
                micro_loss = training_loss(model, batch, loss_tokens, train_cfg.get("fast_path", "none"), device)
            micro_loss.backward()
            loss += micro_loss.detach()
        method.after_backward(step, model)
        grad_norm = None
        if train_cfg.grad_clip:
            grad_norm = clip_gradients(optimizer, params, train_cfg.grad_clip)
        optimizer.step()
        state.scheduler.step()
        optimizer.zero_grad(set_to_none=True)  # frozen blocks must hold no .grad
        method.after_step(step, model)
        state.step = step + 1
        step_s = timer.stop(loss_tokens)
        loss_value = loss.item()
        metrics = {"loss": loss_value, "lr": state.scheduler.get_last_lr()[0], "step_s": step_s,
                   "loss_tokens": loss_tokens, "tokens_per_s": loss_tokens / step_s,
                   "grad_norm": None if grad_norm is None else float(grad_norm), **method.step_metrics()}
        on_step(state.step, metrics)
        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{loss_tokens / step_s:,.0f}", refresh=False)
    bar.close()
    return loss_value
