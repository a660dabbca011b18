"""analysis/summary.py: means, sample stds and n over seeds; changes against a baseline."""
from __future__ import annotations

import math

import pytest

from analysis.collect import collect
from analysis.summary import against_baseline, status_counts, summarize
from analysis_records import paper_runs


def _row(summary, model, method, metric):
    rows = summary[(summary["model"] == model) & (summary["method"] == method) & (summary["metric"] == metric)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_mean_std_n_are_the_arithmetic(tmp_path):
    summary = summarize(collect([paper_runs(tmp_path)]), ["acc/gsm8k_test", "peak_gpu_memory_gib"])
    full = _row(summary, "m1", "full", "acc/gsm8k_test")
    assert full["mean"] == pytest.approx(0.6) and full["std"] == pytest.approx(0.1) and full["n"] == 3
    memory = _row(summary, "m1", "full", "peak_gpu_memory_gib")
    assert memory["mean"] == pytest.approx(12.0) and memory["std"] == pytest.approx(2.0)  # sample std, ddof=1
    # The failed lora run on m1 does not count; three identical ok runs have std 0.
    lora = _row(summary, "m1", "lora", "acc/gsm8k_test")
    assert lora["n"] == 3 and lora["std"] == 0.0
    # A single run has no std (NaN, not 0); a group whose runs all hit OOM keeps its row with n=0.
    assert math.isnan(_row(summary, "m2", "lora", "acc/gsm8k_test")["std"])
    oom = _row(summary, "m2", "full", "acc/gsm8k_test")
    assert oom["n"] == 0 and math.isnan(oom["mean"])
    # A metric no run recorded is all NaN, not a KeyError.
    assert summarize(collect([tmp_path]), ["not_a_metric"])["n"].sum() == 0


def test_status_counts(tmp_path):
    counts = status_counts(collect([paper_runs(tmp_path)])).set_index(["model", "method"])
    assert counts.loc[("m1", "lora")][["runs", "ok", "failed", "oom"]].tolist() == [4, 3, 1, 0]
    assert counts.loc[("m2", "full")][["runs", "ok", "failed", "oom"]].tolist() == [2, 0, 0, 2]


def test_change_relative_to_full(tmp_path):
    summary = against_baseline(summarize(collect([paper_runs(tmp_path)]),
                                         ["peak_gpu_memory_gib", "train_wall_clock_s"]), "full")
    assert _row(summary, "m1", "lora", "peak_gpu_memory_gib")["change_pct"] == pytest.approx(-50.0)  # 6 vs 12
    assert _row(summary, "m1", "lora", "train_wall_clock_s")["change_pct"] == pytest.approx(-10.0)   # 90 vs 100
    assert _row(summary, "m1", "lora", "train_wall_clock_s")["difference"] == pytest.approx(-10.0)
    assert _row(summary, "m1", "full", "train_wall_clock_s")["change_pct"] == 0.0
    # m2's full runs all ran out of memory: no baseline, so no change (empty, not a number).
    assert math.isnan(_row(summary, "m2", "lora", "train_wall_clock_s")["change_pct"])
