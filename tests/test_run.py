"""bench/run/recipe.py end to end: one run and the default sweep through the real CLI (Hydra, W&B offline)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.records.schema import METRIC_KEYS, RECORD_KEYS
from conftest import result_files, run_cli

ENV_KEYS = ("git_sha", "dirty", "torch", "transformers", "peft", "device_name", "cuda")


def test_single_run_writes_every_record(tmp_path, cache_dir):
    run_cli(tmp_path, f"cache_dir={cache_dir}", "train.max_steps=20")
    (result_path,) = list(result_files(tmp_path / "outputs" / "runs"))
    run_dir = result_path.parent
    result = json.loads(result_path.read_text())
    # The record schema module's key lists are complete: an ok record holds exactly these keys.
    assert set(result) == set(RECORD_KEYS), set(result) ^ set(RECORD_KEYS)
    assert tuple(result["metrics"]) == METRIC_KEYS
    assert all(key in result["env"] for key in ENV_KEYS)
    assert result["status"] == "ok" and result["method"] == "full" and result["model"] == "tiny-llama"
    assert result["metrics"]["peak_gpu_memory_gib"] is None  # CPU run: no GPU figure, not a zero
    assert result["metrics"]["train_tokens_per_s"] > 0 and result["metrics"]["peak_host_rss_gib"] > 0
    assert result["config"]["train"]["max_steps"] == 20  # the resolved config
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 21))
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == result["metrics"]["accuracy_by_task"]["arithmetic"]["n"] > 0
    assert {"prompt", "generation", "extracted", "gold", "exact_match"} <= samples[0].keys()
    (wandb_dir,) = list((run_dir / "wandb").glob("offline-run-*"))
    assert list(wandb_dir.glob("*.wandb")), "the offline W&B run has no data file"


def test_default_sweep_one_record_and_wandb_run_per_method_and_seed(tmp_path, cache_dir):
    proc = run_cli(tmp_path, "-m", f"cache_dir={cache_dir}", "train.max_steps=5", "eval.limit=20")
    results = [json.loads(p.read_text()) for p in sorted(result_files(tmp_path / "outputs" / "multirun"))]
    methods, seeds = _swept("method"), [int(s) for s in _swept("seed")]
    assert len(seeds) >= 3  # the default sweep's mean over seeds has a spread to report
    assert sorted((r["method"], r["seed"]) for r in results) == sorted((m, s) for m in methods for s in seeds)
    assert all(r["status"] == "ok" for r in results)
    wandb_runs = {p.name for p in (tmp_path / "outputs" / "multirun").rglob("offline-run-*")}
    assert len(wandb_runs) == len(methods) * len(seeds)  # one distinct W&B run per job, never a shared one
    per_run, over_seeds = proc.stdout.split("Mean over seeds")
    table = [line.split("|") for line in per_run.splitlines() if line.startswith("| ") and "tiny-llama" in line]
    assert sorted((row[1].strip(), int(row[4])) for row in table) == sorted((m, s) for m in methods for s in seeds)
    summary = [line.split("|") for line in over_seeds.splitlines() if line.startswith("| ") and "tiny-llama" in line]
    assert [(row[1].strip(), row[4].strip()) for row in summary] == [(m, str(len(seeds))) for m in methods]


def _swept(axis: str) -> list[str]:
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "config.yaml")
    return str(config.hydra.sweeper.params[axis]).split(",")


def test_unknown_group_options_list_the_allowed_ones(tmp_path):
    for group, allowed in (("method", "full"), ("model", "tiny-llama"), ("task", "arithmetic")):
        proc = run_cli(tmp_path, f"{group}=nope", check=False)
        assert proc.returncode != 0
        assert f"Could not find '{group}/nope'" in proc.stderr and allowed in proc.stderr


def test_non_positive_values_name_the_key(tmp_path, cache_dir):
    for override, key in (("train.batch_size=0", "train.batch_size"), ("train.lr=-1", "train.lr")):
        proc = run_cli(tmp_path, override, "wandb.mode=disabled", f"cache_dir={cache_dir}", check=False)
        assert proc.returncode == 2
        assert f"config error: {key} must be positive" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    proc = run_cli(tmp_path, "-m", "method=full", "seed=0", "train.batch_size=100000,8", f"cache_dir={cache_dir}",
                   "train.max_steps=3", "eval.limit=8", "wandb.mode=disabled")
    records = {r["config"]["train"]["batch_size"]: r for r in
               (json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "multirun"))}
    assert records[8]["status"] == "ok"  # the job after the failure ran
    failed = records[100000]
    assert failed["status"] == "failed" and failed["error"]["type"] == "ValueError"
    assert "train.batch_size=100000 exceeds" in failed["error"]["message"]
    assert all(v is None for v in failed["metrics"].values())
    rows = [line for line in proc.stdout.splitlines() if "| tiny-llama |" in line]
    assert len(rows) == 2 and any("| failed |" in row for row in rows)
