"""Device and precision: resolved once per run, and the autocast every forward pass uses.

Training, evaluation and the methods' own forward passes (IST's probes) import from here, so none
of them imports the training loop.
"""
from __future__ import annotations

import contextlib

import torch

from bench.errors import ConfigError

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
