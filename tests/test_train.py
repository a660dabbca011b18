"""bench/run/loop.py: the loop learns — full fine-tuning of the tiny base beats the base model."""
from __future__ import annotations

import json

from bench.cli import run_job
from conftest import compose_config

NAMES = {"method": "-", "model": "tiny-llama", "task": "arithmetic"}


def _run(tmp_path, cache_dir, method: str, *overrides: str) -> dict:
    cfg = compose_config(f"method={method}", f"cache_dir={cache_dir}", "wandb.mode=disabled", "seed=0", *overrides)
    return run_job(cfg, tmp_path / method, {**NAMES, "method": method}, None)


def test_full_finetuning_lowers_loss_and_lifts_accuracy_above_the_base(tmp_path, cache_dir):
    base = _run(tmp_path, cache_dir, "none")["metrics"]
    full = _run(tmp_path, cache_dir, "full")
    losses = [line for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    first, last = json.loads(losses[0])["loss"], json.loads(losses[-1])["loss"]
    n = full["metrics"]["accuracy_by_task"]["arithmetic"]["n"]
    assert n >= 150
    # The base never saw "#": it answers with a neighbouring operator's result. The default steps of
    # full fine-tuning must lift exact match by at least 40 points on >= 150 held-out pairs, which
    # chance (or a lucky operator confusion) cannot produce.
    assert base["accuracy"] <= 0.1
    assert full["metrics"]["accuracy"] >= base["accuracy"] + 0.4
    assert last < 0.5 * first


def test_grad_accumulation_counts_every_loss_token_once(tmp_path, cache_dir):
    """batch 32 x 1 and batch 16 x 2 micro-batches see the same 32 examples in their first step
    (the epoch permutation depends only on the seed), so the token-weighted loss must agree."""
    one = _run(tmp_path / "a", cache_dir, "full", "train.max_steps=1", "train.batch_size=32", "eval.limit=1")
    two = _run(tmp_path / "b", cache_dir, "full", "train.max_steps=1", "train.batch_size=16",
               "train.grad_accum=2", "eval.limit=1")
    assert abs(one["metrics"]["final_train_loss"] - two["metrics"]["final_train_loss"]) < 1e-5


def test_log_every_reads_the_loss_every_n_steps_on_the_same_trajectory(tmp_path, cache_dir):
    """train.log_every=3: metrics.jsonl still holds one row per step, the loss read at steps 3, 6
    and the last (null on the others); those losses are the every-step run's losses at those steps
    (the same training), every read window is timed, and the run's final loss is the last read."""
    every = _run(tmp_path / "a", cache_dir, "full", "train.max_steps=7", "eval.limit=1")
    third = _run(tmp_path / "b", cache_dir, "full", "train.max_steps=7", "eval.limit=1", "train.log_every=3")
    lines = {s: [json.loads(line) for line in (tmp_path / s / "full" / "metrics.jsonl").read_text().splitlines()]
             for s in ("a", "b")}
    assert [m["step"] for m in lines["b"]] == list(range(1, 8))
    read = [m for m in lines["b"] if m["loss"] is not None]
    assert [m["step"] for m in read] == [3, 6, 7]
    assert all(m["grad_norm"] is None for m in lines["b"] if m["loss"] is None)
    by_step = {m["step"]: m["loss"] for m in lines["a"]}
    assert all(abs(m["loss"] - by_step[m["step"]]) < 1e-6 for m in read)
    assert all(m["step_s"] > 0 for m in read)
    assert [m["lr"] for m in lines["b"]] == [m["lr"] for m in lines["a"]]
    assert third["metrics"]["final_train_loss"] == every["metrics"]["final_train_loss"] == read[-1]["loss"]
    assert third["metrics"]["median_step_s"] is not None
