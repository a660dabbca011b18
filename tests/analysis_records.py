"""Hand-built run records with known values, for the analysis tests (not a test module)."""
from __future__ import annotations

import json
from pathlib import Path


def record(method: str, model: str, seed: int, status: str = "ok", task: str = "metamathqa",
           gsm8k: float | None = None, math500: float | None = None, **metrics) -> dict:
    """A result.json as bench/run/recipe.py writes it; accuracy = the mean of the eval sets given."""
    sets = {name: {"exact_match": value, "n": 100} for name, value in (("gsm8k", gsm8k), ("math500", math500))
            if value is not None}
    body = {"status": status, "method": method, "model": model, "task": task, "seed": seed,
            "metrics": {"accuracy": None, "accuracy_by_task": {}, "primary_metric": "exact_match"},
            "config": {"seed": seed, "train": {"lr": 1e-4, "betas": [0.9, 0.999]}, "method": {"r": 256}},
            "env": {"git_sha": "abc", "dirty": False}}
    if status == "ok":
        body["metrics"]["accuracy_by_task"] = sets
        body["metrics"]["accuracy"] = sum(s["exact_match"] for s in sets.values()) / len(sets) if sets else None
        body["metrics"].update(metrics)
    else:
        body["error"] = {"type": "OutOfMemoryError" if status == "oom" else "RuntimeError",
                         "message": f"{status} at step 7", "step": 7}
    return body


def write(root: Path, name: str, payload) -> Path:
    path = Path(root) / name / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def paper_runs(root: Path) -> Path:
    """Two models; m1: full (3 seeds) and lora (3 ok + 1 failed); m2: full all OOM, lora 1 run
    without a peak-memory metric. Known answers are in the tests."""
    runs = [
        ("0-full-m1-s0", record("full", "m1", 0, gsm8k=0.5, math500=0.2, peak_gpu_memory_gib=10.0, train_wall_clock_s=100.0, train_tokens_per_s=1000.0)),
        ("1-full-m1-s1", record("full", "m1", 1, gsm8k=0.6, math500=0.3, peak_gpu_memory_gib=12.0, train_wall_clock_s=100.0, train_tokens_per_s=1000.0)),
        ("2-full-m1-s2", record("full", "m1", 2, gsm8k=0.7, math500=0.4, peak_gpu_memory_gib=14.0, train_wall_clock_s=100.0, train_tokens_per_s=1000.0)),
        ("3-lora-m1-s0", record("lora", "m1", 0, gsm8k=0.4, math500=0.4, peak_gpu_memory_gib=6.0, train_wall_clock_s=80.0, train_tokens_per_s=1250.0)),
        ("4-lora-m1-s1", record("lora", "m1", 1, gsm8k=0.4, math500=0.4, peak_gpu_memory_gib=6.0, train_wall_clock_s=90.0, train_tokens_per_s=1250.0)),
        ("5-lora-m1-s2", record("lora", "m1", 2, gsm8k=0.4, math500=0.4, peak_gpu_memory_gib=6.0, train_wall_clock_s=100.0, train_tokens_per_s=1250.0)),
        ("6-lora-m1-s3", record("lora", "m1", 3, status="failed")),
        ("7-full-m2-s0", record("full", "m2", 0, status="oom")),
        ("8-full-m2-s1", record("full", "m2", 1, status="oom")),
        ("9-lora-m2-s0", record("lora", "m2", 0, gsm8k=0.25, math500=0.1, train_wall_clock_s=50.0)),
    ]
    for name, body in runs:
        write(root, name, body)
    return Path(root)
