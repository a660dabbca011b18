"""Hand-built run records with known values, for the analysis tests (not a test module)."""
from __future__ import annotations

import json
from pathlib import Path


# The eval-set names of conf/task/metamathqa.yaml (the papers' protocol task): what
# `+experiment=adagradselect_paper` records, and what analysis/paper_numbers.csv is keyed to.
GSM8K_SET, MATH_SET = "gsm8k_test", "math500"


def record(method: str, model: str, seed: int, status: str = "ok", task: str = "metamathqa",
           gsm8k: float | None = None, math500: float | None = None, **metrics) -> dict:
    """A result.json as bench/run/recipe.py writes it for the metamathqa task (primary metric
    `accuracy`, eval sets gsm8k_test and math500); accuracy = the mean of the eval sets given."""
    sets = {name: {"accuracy": value, "n": 100} for name, value in ((GSM8K_SET, gsm8k), (MATH_SET, math500))
            if value is not None}
    body = {"status": status, "method": method, "model": model, "task": task, "seed": seed,
            "metrics": {"accuracy": None, "accuracy_by_task": {}, "primary_metric": "accuracy"},
            "config": {"seed": seed, "model": {"name": model}, "task": {"name": task},
                       "train": {"lr": 1e-4, "betas": [0.9, 0.999]}, "method": {"name": method, "r": 256}},
            "env": {"git_sha": "abc", "dirty": False}}
    if status == "ok":
        body["metrics"]["accuracy_by_task"] = sets
        body["metrics"]["accuracy"] = sum(s["accuracy"] for s in sets.values()) / len(sets) if sets else None
        body["metrics"].update(metrics)
    else:
        body["error"] = {"type": "OutOfMemoryError" if status == "oom" else "RuntimeError",
                         "message": f"{status} at step 7", "step": 7}
    return body


def write(root: Path, name: str, payload, samples: list[dict] | None = None) -> Path:
    """`<root>/<name>/result.json` (and samples.jsonl when given)."""
    path = Path(root) / name / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    if samples is not None:
        (path.parent / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def samples(eval_set: str, verdicts, metric: str = "exact_match") -> list[dict]:
    """samples.jsonl lines as bench/eval/evaluate.py writes them, one verdict per question; the
    question ids are the positions, so two runs' i-th samples are the same question."""
    return [{"eval_set": eval_set, "id": f"q{i}", "prompt": f"question {i}", "generation": "7",
             "extracted": "7", "gold": "7" if v else "8", metric: bool(v)} for i, v in enumerate(verdicts)]


def smoke_record(method: str, model: str, seed: int, verdicts, **metrics) -> tuple[str, dict, list[dict]]:
    """A run as `+experiment=adagradselect_paper_smoke` names it: task `arithmetic` (its eval
    set is also `arithmetic`, primary metric exact_match) on a tiny model; the record has no
    intervals (written before runs carried them), its samples.jsonl has the verdicts."""
    accuracy = sum(map(bool, verdicts)) / len(verdicts)
    body = {"status": "ok", "method": method, "model": model, "task": "arithmetic", "seed": seed,
            "metrics": {"accuracy": accuracy, "primary_metric": "exact_match",
                        "accuracy_by_task": {"arithmetic": {"exact_match": accuracy, "n": len(verdicts)}}, **metrics},
            "config": {"seed": seed, "model": {"name": model}, "method": {"name": method}},
            "env": {"git_sha": "abc", "dirty": False}}
    return f"{method}-{model}-s{seed}", body, samples("arithmetic", verdicts)


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


def protocol_record(method: str, stage: str, seed: int, lr: float, verdicts, start: float, seconds: float = 100.0,
                    memory: float = 10.0, device: str = "NVIDIA H100 80GB HBM3", **config) -> tuple[dict, list[dict]]:
    """A run of the comparison protocol (config `protocol.stage` selection|final) on SmolLM2 and
    GSM8K: selection runs are scored on the validation split, final runs on the test set."""
    split = "validation" if stage == "selection" else "test"
    name, body, lines = smoke_record(method, "smollm2-135m", seed, verdicts, train_wall_clock_s=seconds,
                                     peak_gpu_memory_gib=memory, train_steps=30)
    body["task"] = "gsm8k"
    body["config"].update({"task": {"name": "gsm8k", "validation_size": 500}, "eval": {"split": split},
                           "train": {"lr": lr, "epochs": 3}, "protocol": {"stage": stage, "name": "smollm2_gsm8k"},
                           **config})
    body.update({"eval_split": split, "started_at": start, "finished_at": start + seconds + 10,
                 "validation": {"size": 500, "seed": 0, "sha256": "0" * 64}})
    body["env"]["device_name"] = device
    return body, lines
