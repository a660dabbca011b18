"""The training loop: batch -> forward -> backward -> method hooks -> clip -> step. One screen.

Timing, logging, checkpointing and profiling are observers (bench/run/observers.py): the loop
calls `step_start(step)` before a step and `step_end(step, metrics)` after it, in order, and
knows nothing else about them.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from bench.data.batching import IGNORE_INDEX
from bench.compiled import DecoderGraph
from bench.loss import training_loss
from bench.run.optim import clip_gradients
from bench.runtime import autocast
from methods.base import Method


@dataclass
class TrainState:
    model: torch.nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    batches: Iterator[dict[str, torch.Tensor]]  # bench/data/epochs.py EpochStream: resumable
    device: torch.device
    precision: str  # "bf16" (autocast) | "fp32"
    step: int = 0  # optimizer steps done
    decoder_graph: DecoderGraph | None = None  # train.cuda_graphs: the decoder replayed (bench/compiled.py)


def train(state: TrainState, train_cfg, until: int, observers: Sequence = ()) -> float:
    """Optimizer steps `state.step .. until` under `train_cfg` (the run's `cfg.train`); returns the last loss."""
    model, method, optimizer, device, decoder_graph = state.model, state.method, state.optimizer, state.device, \
        state.decoder_graph
    # Read once: an OmegaConf attribute costs ~60 us, seven a step were most of the loop's own host time.
    accum, fast_path, grad_clip, log_every = (train_cfg.grad_accum, train_cfg.fast_path, train_cfg.grad_clip,
                                              train_cfg.log_every)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model.train()
    loss_value = float("nan")
    bar = tqdm(range(state.step, until), desc="train", initial=state.step, total=until,
               dynamic_ncols=True, mininterval=1.0)
    for step in bar:
        for observer in observers:
            observer.step_start(step)
        method.on_step_start(step, model)
        micro_batches = [next(state.batches) for _ in range(accum)]
        # Token-weighted loss over the whole accumulation window: every loss-bearing token
        # counts once, whatever micro-batch it sits in (labels shift by one inside the model).
        loss_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
        loss = torch.zeros((), device=device)
        for batch in micro_batches:
            with autocast(device, state.precision):
                # train.fast_path: none = HF's own loss; chunked_ce = no full-vocab logits.
                micro_loss = training_loss(model, batch, loss_tokens, fast_path, device, decoder_graph)
            micro_loss.backward()
            loss += micro_loss.detach()
        method.after_backward(step, model)
        grad_norm = clip_gradients(optimizer, params, grad_clip) if grad_clip else None
        optimizer.step()
        state.scheduler.step()
        optimizer.zero_grad(set_to_none=True)  # frozen blocks must hold no .grad
        method.after_step(step, model)
        state.step = step + 1
        # train.log_every: read the loss (a host sync) only every N steps, so the host can queue the
        # next steps' kernels while the GPU works; the other steps log a null loss.
        synced = state.step % log_every == 0 or state.step == until
        loss_value = loss.item() if synced else loss_value
        metrics = {"loss": loss_value if synced else None, "lr": state.scheduler.get_last_lr()[0],
                   "loss_tokens": loss_tokens, "grad_norm": float(grad_norm) if synced and grad_norm is not None else None,
                   **method.step_metrics()}
        for observer in observers:
            observer.step_end(state.step, metrics)
        if synced:
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{metrics.get('tokens_per_s', 0):,.0f}", refresh=False)
    bar.close()
    return loss_value
