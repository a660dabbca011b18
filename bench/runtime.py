"""Device and precision: resolved once per run, and the autocast every forward pass uses.

Training, evaluation and the methods' own forward passes (IST's probes) import from here, so none
of them imports the training loop.
"""
from __future__ import annotations

import contextlib
import gc

import torch

from bench.config.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA device")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 autocast on GPU, fp32 on CPU (bf16 matmuls on CPU are slow and not what we time)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """bf16 autocast on GPU, plain fp32 on CPU (weights stay fp32 either way)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FreezeAfterFirstStep:
    """A loop observer: what the first step of a `train` call made and keeps (torch.compile's
    graphs, guards and generated code, the captured CUDA graphs, the optimizer's state) joins the
    collector's permanent generation too, as what existed before training did (`frozen_collector`,
    whose exit unfreezes both). Our choice: a compiling first step leaves many long-lived objects
    behind, which every later full collection would walk again. In the reference workload's 76-step
    epochs no full collection fell after the first step anyway (docs/performance-analysis.md, the
    cold-start probe); longer runs are where this can count."""

    def __init__(self):
        self.done = False

    def step_start(self, step: int) -> None:
        pass

    def step_end(self, step: int, metrics: dict) -> None:
        if not self.done:
            gc.freeze()
            self.done = True


@contextlib.contextmanager
def frozen_collector():
    """Within: the objects alive on entry (a run's examples, modules, config) sit in the collector's
    permanent generation (`gc.freeze`), so no full collection walks them between training steps;
    on exit they are collected as before; new objects are collected automatically throughout. Our
    choice, for long runs: a full pass walks every tracked object (about 560k in a SmolLM2 run,
    0.30-0.34 s a pass on an H200). The passes the benchmark's host probe counted in harness windows
    were the explicit collections before the first step, not passes between steps
    (docs/performance-analysis.md). torchtitan controls its collector too, differently (its
    GarbageCollection helper: automatic collection off, a generation-1 pass every N steps)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
