"""Device and precision: resolved once per run, and the autocast every forward pass uses.

Training, evaluation and the methods' own forward passes (IST's probes) import from here, so none
of them imports the training loop.
"""
from __future__ import annotations

import contextlib

import torch

from bench.errors import ConfigError
from bench.records.schema import DEVICE_SHARE_ENV  # the file the parallel launcher writes for a job

PRECISIONS = ("auto", "bf16", "fp32")
TIMINGS = (None, "solo")  # `timing`: an ordinary run, or a solo timing copy (hydra.launcher.solo_timing)


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


# -- a sweep's shared compile cache, and what a run's compile did --------------------------------

_CACHES_SET: dict[str, str] = {}  # what use_compile_caches set in this process


def use_compile_caches(cache_dir: str) -> dict[str, str]:
    """Inductor's and Triton's caches under `<cache_dir>/inductor` and `<cache_dir>/triton`, unless
    the user set TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR: every job of a sweep (each its own
    process) then finds the graphs and kernels the first one compiled, where torch's default
    (/tmp/torchinductor_<user>) is per machine and may be wiped. Set before anything compiles: the
    caches are looked up per compile. Importing torch._dynamo writes torch's default into
    TORCHINDUCTOR_CACHE_DIR (torch/_dynamo/package.py), so that value counts as unset."""
    import os
    from pathlib import Path

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    root = Path(cache_dir).resolve()
    for env, sub, torch_default in (("TORCHINDUCTOR_CACHE_DIR", "inductor", default_cache_dir()),
                                    ("TRITON_CACHE_DIR", "triton", None)):
        # A value an earlier run of this process set is ours too, not the user's: the next run's
        # cache_dir replaces it (several runs in one process: the basic launcher, tests).
        if os.environ.get(env) in (None, "", torch_default, _CACHES_SET.get(env)):
            os.environ[env] = _CACHES_SET[env] = str(root / sub)
    return {"inductor": os.environ["TORCHINDUCTOR_CACHE_DIR"], "triton": os.environ["TRITON_CACHE_DIR"]}


# Inductor's options for every graph the harness compiles (the decoder layers, bench/compiled.py;
# the chunked loss's kernel, bench/loss.py). Without autotuning the pointwise kernels' launch
# configs, Inductor builds one config per pointwise kernel instead of several and times none of them
# at its first launch (36 such kernels in SmolLM2-135M's layer; the reductions' configs are still
# timed: tests/test_fast_path.py counts fewer timings, not none). That only shortens a compile with
# empty caches, the first job of a sweep: on one H100 machine, processes with empty caches taking turns
# (docs/performance-analysis.md, 'The cold epoch: the options side by side'), SmolLM2-135M's layer
# shape trained its cold epoch in 11.58 s against 12.24 s (three processes each), at the same step
# time (0.070 s) and loss. Our choice: the pattern-matcher passes stay on; turning them off as well
# saved nothing more there (11.60 s), and it would change every model's compiled graph.
INDUCTOR_OPTIONS = {"triton.autotune_pointwise": False}


class CompileRecord:
    """result.json's `compile`, counted from the run's setup on (the counters are the process's):
    whether the run compiled, its FX-graph and AOT-autograd cache hits and misses
    (torch._dynamo.utils.counters: a hit is a graph the sweep's cache already held), and the seconds
    spent compiling (dynamo's compile of the forward graphs with their lowering, plus the backward
    graphs' lazy compile: torch._dynamo.utils.compilation_time_metrics)."""

    COUNTERS = (("inductor", "fxgraph_cache_hit", "fx_graph_cache_hit"), ("inductor", "fxgraph_cache_miss", "fx_graph_cache_miss"),
                ("aot_autograd", "autograd_cache_hit", "aot_autograd_cache_hit"),
                ("aot_autograd", "autograd_cache_miss", "aot_autograd_cache_miss"))
    TIMERS = ("_compile.compile_inner", "backward._backward_impl")

    def __init__(self, enabled: bool, caches: dict[str, str]):
        self.enabled, self.caches = enabled, caches
        self.start = self._read()

    @classmethod
    def _read(cls) -> dict[str, float]:
        from torch._dynamo.utils import compilation_time_metrics, counters

        read = {name: counters[group][key] for group, key, name in cls.COUNTERS}
        read["seconds"] = sum(sum(compilation_time_metrics.get(k, ())) for k in cls.TIMERS)
        return read

    def summary(self) -> dict:
        now = self._read()
        delta = {name: now[name] - self.start[name] for name in now}
        delta["seconds"] = round(delta["seconds"], 3)
        return {"enabled": self.enabled, **delta, "cache_dir": self.caches}


# -- how many jobs shared the device (hydra_plugins/slmbench_launcher writes what a job reads) ----



def device_share(device: torch.device) -> dict:
    """result.json's `device_share`: the physical GPU (its UUID) and the most slmbench jobs that ran
    on it at once during this run (1: the run had it alone), with the launcher's jobs_per_gpu. A job
    of the parallel launcher reads what the launcher wrote for it (it rewrites the file whenever a
    job joins the card; on the CPU the host is the device), including `mps`: whether the job ran as
    a client of the launcher's MPS server (hydra.launcher.mps); any other run ran alone (the basic
    launcher runs one job at a time)."""
    import json
    import os

    uuid = None
    if device.type == "cuda":
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"  # nvidia-smi's spelling
    share = {"gpu_uuid": uuid, "jobs_on_device_max": 1, "launcher_jobs_per_gpu": None, "mps": False}
    path = os.environ.get(DEVICE_SHARE_ENV)
    if path:
        written = json.loads(open(path).read())
        share["jobs_on_device_max"] = int(written["jobs_on_device_max"])
        share["launcher_jobs_per_gpu"] = written["launcher_jobs_per_gpu"]
        share["mps"] = bool(written.get("mps", False))
        share["gpu_uuid"] = uuid or written["gpu_uuid"]
    return share
