"""`python -m lab real_workload --quick` on a tiny model (CPU): every part writes its key of the
JSON in the issue's shape, each row an `slmbench` config; a later call adds to the file; the report
renders it. Figures are never asserted."""
from __future__ import annotations

import json

import pytest
import torch

from bench.data.examples import TokenizedExample
from bench.data.packing import PackedBatches
from lab import real_workload, report as perf_report
from lab.cli import main as lab
from lab.workload import real_tokens
from conftest import HUB_ASSETS, SHARED_DATA

QUICK = ["--quick", "--model", "tiny-llama3.2", "--device", "cpu", "--data-dir", str(SHARED_DATA)]
TRAIN_KEYS = {"tokens_per_s", "median_step_s", "peak_gpu_gib", "overrides", "status"}
METHOD_KEYS = {"method", "status", "accuracy", "ci95", "peak_gpu_memory_gib", "train_s", "tokens_per_s"}
PAPER_KEYS = {"shape", "method", "memory_ratio_vs_full", "time_ratio_vs_full", "peak_gpu_gib", "median_step_s"}


@HUB_ASSETS
def test_quick_run_writes_every_key_then_adds_a_part_and_the_report_renders(tmp_path):
    out = tmp_path / "real_workload.json"
    lab(["real_workload", *QUICK, "--out", str(out)])
    report = json.loads(out.read_text())
    assert {"device", "date", "commit", "command", "workload", "train", "eval", "methods", "paper_config",
            "cold_start"} <= set(report)
    assert set(report["commit"]) == {"git_sha", "dirty", "worktree_tree_sha"}
    assert {"model", "task", "epoch_steps", "batch", "precision", "train_examples"} <= set(report["workload"])
    train = report["train"]
    assert list(train) == list(real_workload.TRAIN_ROWS)
    for name, row in train.items():
        assert TRAIN_KEYS <= set(row) and row["status"] == "ok", (name, row)
    assert {"settings"} <= set(train["hf_trainer"]) and {"settings", "epoch_s"} <= set(train["harness_fast"])
    # Each row is the slmbench run of its overrides: the fast row packs, the default row does not.
    assert "train.batching=packed" in train["harness_fast"]["overrides"]
    assert train["harness_default"]["settings"]["batching"] == "random"
    assert train["harness_fast"]["notes"], "compile is GPU only: the CPU row must say it was left out"
    # The fast row trains at the square-root-scaled lr of its token budget, and both evaluated rows
    # carry accuracy, its interval and a loss curve (the optimisation comparison).
    schedule = train["harness_fast"]["settings"]["schedule"]
    assert schedule["lr_scaling"] == "sqrt" and schedule["tokens_ratio"] > 1
    assert schedule["lr"] == pytest.approx(train["harness_fast"]["settings"]["lr"] * schedule["tokens_ratio"] ** 0.5)
    for name in ("harness_default", "harness_fast", "harness_fast_eager"):  # the fast rows: whole epoch, evaluated
        row = train[name]
        assert 0 <= row["accuracy"] <= 1 and row["ci95"][0] <= row["accuracy"] <= row["ci95"][1], row
        assert len(row["loss_curve"]["tokens"]) == len(row["loss_curve"]["loss"]) >= 1
    assert "accuracy" not in train["harness_length_grouped"], "an overhead pair's harness side is not evaluated"
    # CUDA graphs are CUDA only: the CPU fast rows say they were left out
    assert any("CUDA graphs left out" in note for note in train["harness_fast"]["notes"])
    assert train["harness_fast"]["settings"]["cuda_graphs"] is False
    # The overhead pair on the fast batches computes what the plain loop computes: HF's loss, eager.
    pair = train["harness_same_batches_as_fast"]["settings"]
    assert (pair["batching"], pair["fast_path"], pair["compile"], pair["cuda_graphs"]) == ("packed", "none", False, False)
    ev = report["eval"]
    assert ev["status"] == "ok" and ev["hf"]["seconds"] > 0 and ev["static"]["seconds"] > 0
    assert ev["static"]["identical_fp32"][1] == 2 and "identical_bf16" in ev["static"]
    assert [m["method"] for m in report["methods"]] == ["none", "lora"]
    assert all(METHOD_KEYS <= set(m) and m["status"] == "ok" for m in report["methods"]), report["methods"]
    assert [(r["shape"], r["method"]) for r in report["paper_config"]] == [
        ("tiny-qwen2.5", "full"), ("tiny-qwen2.5", "adagradselect")]
    assert all(PAPER_KEYS <= set(r) and r["status"] == "ok" for r in report["paper_config"])
    assert report["paper_config"][0]["time_ratio_vs_full"] == 1.0
    assert all("+experiment=adagradselect_paper" in r["overrides"] for r in report["paper_config"])

    # The plain loop's untimed pass saw each shape once; pairs keep their timed window's step times.
    assert train["plain_eager"]["warmed_shapes"] >= 1
    # ... and so did each pair's harness side, before its timed steps; the fast row (its epoch is a target) did not.
    assert train["harness_length_grouped"]["warmed_shapes"] == train["plain_length_grouped"]["warmed_shapes"]
    assert train["harness_fast"]["warmed_shapes"] is None
    # The evaluated harness rows say where their first steps went: compile phases, graph capture (CUDA only).
    assert train["harness_fast"]["first_steps"]["decoder_graph_capture_s"] is None
    assert isinstance(train["harness_fast"]["first_steps"]["compile_s"], dict)
    # Both sides of a pair carry the host probe, over the same number of steps.
    plain_host, harness_host = train["plain_length_grouped"]["host"], train["harness_length_grouped"]["host"]
    assert plain_host["steps"] == harness_host["steps"] >= 1
    assert "MainThread" in harness_host["threads"]
    assert 0 < harness_host["main_thread_cpu_s"] and 0 < harness_host["wall_s"]
    assert len(train["plain_eager"]["step_seconds"]) == len(train["harness_default"]["step_seconds"])

    # cold_start: a new process composed harness_fast's config (its overrides but the evaluation's),
    # trained the epoch and wrote its figures back.
    cold, = report["cold_start"]["processes"]
    assert cold["status"] == "ok", cold
    evaluation = ("eval.engine=", "eval.batch_size=", "eval.limit=")
    assert cold["overrides"] == [o for o in train["harness_fast"]["overrides"] if not o.startswith(evaluation)]
    assert report["cold_start"]["epoch_s"] == [cold["epoch_s"]] and cold["epoch_s"] >= cold["first_steps_s"] > 0
    assert cold["steps"] == train["harness_fast"]["steps_trained"] and cold["build_s"] > 0

    # A later call measures one part and keeps the others (a split over device calls); every row
    # names the call that measured it, and the part lists both calls.
    lab(["real_workload", *QUICK, "--parts", "eval", "--out", str(out)])
    again = json.loads(out.read_text())
    assert again["train"] == report["train"] and set(again["parts_run"]) == set(real_workload.PARTS)
    first, second = again["parts_run"]["eval"]
    assert again["eval"]["measured_by"] == second["date"] != first["date"] == report["eval"]["measured_by"]
    assert [call["date"] for call in again["parts_run"]["train"]] == [train["plain_eager"]["measured_by"]]

    page = tmp_path / "performance.md"
    lab(["report", "--real-workload", str(out), "--out", str(page)])
    text = page.read_text()
    assert again["parts_run"]["train"][0]["command"] in text and second["command"] in text
    assert "| harness_fast | ok |" in text and "| lora | ok |" in text and "| tiny-qwen2.5 | adagradselect | ok |" in text
    assert "![loss curves](perf/loss_curves.png)" in text and "| harness_fast | " in text
    assert "| 1 | ok |" in text and "harness_fast epoch in 1 new processes" in text  # the cold_start table and line
    png = tmp_path / "loss_curves.png"
    lab(["loss_curves", str(out), "--out", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_real_tokens_of_packed_rows_are_the_examples_tokens():
    """Packed rows carry no attention mask: their real tokens are the examples laid in them, not the tail."""
    examples = [TokenizedExample(list(range(1, n + 1)), [-100] * 2 + list(range(3, n + 1))) for n in (5, 9, 4, 7, 6)]
    stream = PackedBatches(examples, pad_token_id=0, seed=0, batch_size=2, pack_len=12)
    batches = [next(stream) for _ in range(stream.batches_per_epoch)]
    assert all("attention_mask" not in b for b in batches)
    assert sum(real_tokens(b) for b in batches) == 5 + 9 + 4 + 7 + 6
    assert sum(real_tokens(b) for b in batches) < sum(b["input_ids"].numel() for b in batches)
    padded = {"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])}
    assert real_tokens(padded) == 5


def test_an_overhead_pairs_summed_ratio_is_the_inverse_of_its_tokens_per_s():
    """Both sides train the same tokens, so summed time harness/plain = tokens/s plain/harness; the
    median-step ratio is reported beside it (with train.log_every=10 a window's steps share one time)."""
    row = lambda tok, step: {"status": "ok", "tokens_per_s": tok, "median_step_s": step}  # noqa: E731
    report = {"train": {"plain_same_batches_as_fast": row(100.0, 0.10), "harness_same_batches_as_fast": row(80.0, 0.11)}}
    ratios = perf_report.real_workload_ratios(report)
    assert ratios["same_batches_as_fast_over_plain_time"] == pytest.approx(1.25)
    assert ratios["same_batches_as_fast_over_plain_step"] == pytest.approx(1.1)
    assert ratios["default_over_plain_time_padded"] is None  # a missing pair stays missing
    assert "summed over the timed steps x1.25" in perf_report.real_workload_summary(report)
