"""Measurement that attaches to a run: synced step timer (a loop observer), peak GPU memory per
phase, peak host RSS, tokens/s after warm-up."""
from __future__ import annotations

import gc
import threading
import time

import psutil
import torch

from bench.runtime import synchronize

GIB = 2**30


class RssSampler:
    """Peak resident memory of this process *during one run*.

    `ru_maxrss` is a process-lifetime maximum, so a later job of an in-process Hydra sweep would
    inherit an earlier job's peak; a sampler thread started per run does not.
    """

    def __init__(self, interval_s: float = 0.05):
        self._process = psutil.Process()
        self._interval_s = interval_s
        self.peak_bytes = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


class PhaseMemory:
    """Peak allocated/reserved GPU memory over one phase (train or eval); None on CPU."""

    def __init__(self, device: torch.device):
        self.device, self._device_mallocs = device, 0

    def start(self) -> None:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._device_mallocs = torch.cuda.memory_stats(self.device).get("num_device_alloc", 0)

    def peaks(self) -> dict[str, float | None]:
        if self.device.type != "cuda":
            return {"allocated_gib": None, "reserved_gib": None, "alloc_retries": None, "device_mallocs": None}
        stats = torch.cuda.memory_stats(self.device)
        return {
            "allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
            "reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB,
            # lingua's signal for a run close to the memory limit.
            "alloc_retries": stats.get("num_alloc_retries", 0),
            # cudaMalloc calls over the phase: each is a slow host call; a loop that keeps making
            # them (a cache that never settles) pays on the host at every step.
            "device_mallocs": stats.get("num_device_alloc", 0) - self._device_mallocs,
        }


class StepTimer:
    """A loop observer: per-step wall-clock between device syncs, and tokens/s excluding the first
    `warmup_steps` (compilation, allocator warm-up). It adds `step_s` and `tokens_per_s` to the
    step's metrics, so it must come before the observers that log them."""

    def __init__(self, device: torch.device, warmup_steps: int):
        self.device, self.warmup_steps = device, warmup_steps
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []
        self._t0: float | None = None
        self._window: list[dict] = []  # the steps since the last sync (train.log_every > 1)

    def step_start(self, step: int) -> None:
        if self._t0 is None:
            synchronize(self.device)
            self._t0 = time.perf_counter()

    def step_end(self, step: int, metrics: dict) -> None:
        """A step whose loss was read (synced) closes the window: its time is shared equally by the
        window's steps. Unsynced steps (train.log_every) add no sync of their own."""
        self._window.append(metrics)
        if metrics["loss"] is None:
            return
        synchronize(self.device)
        elapsed = (time.perf_counter() - self._t0) / len(self._window)
        for step_metrics in self._window:
            self.step_seconds.append(elapsed)
            self.step_tokens.append(step_metrics["loss_tokens"])
            step_metrics["step_s"], step_metrics["tokens_per_s"] = elapsed, step_metrics["loss_tokens"] / elapsed
        self._t0, self._window = None, []

    @property
    def total_seconds(self) -> float:
        return sum(self.step_seconds)

    def tokens_per_s(self) -> float | None:
        # With fewer steps than the warm-up, report nothing rather than a warm-up-polluted figure.
        seconds = sum(self.step_seconds[self.warmup_steps:])
        tokens = sum(self.step_tokens[self.warmup_steps:])
        return tokens / seconds if seconds > 0 else None

    def median_step_s(self) -> float | None:
        timed = sorted(self.step_seconds[self.warmup_steps:])
        return timed[len(timed) // 2] if timed else None

    def state_dict(self) -> dict:
        return {"seconds": self.step_seconds, "tokens": self.step_tokens}

    def load_state_dict(self, state: dict) -> None:
        self.step_seconds, self.step_tokens = list(state["seconds"]), list(state["tokens"])
