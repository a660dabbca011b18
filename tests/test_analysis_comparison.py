"""analysis/comparison.py: method vs baseline on the same questions, from samples.jsonl."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from analysis.collect import collect
from analysis.comparison import paired_table, paired_verdicts
from analysis.stats import hierarchical_bootstrap, percentile_interval
from analysis_records import paper_runs, smoke_record, write

N = 100
# Seed 0 and 1 of the baseline: 50 right. "better": 15 questions the baseline missed, 3 it got
# (p = binomtest(3, 18) < 0.05 per seed); "same": 5 right only with it, 6 only with the baseline (p > 0.5).
BASE = [True] * 50 + [False] * 15 + [True] * 3 + [True] * 6 + [False] * 5 + [False] * 21
BETTER = [True] * 50 + [True] * 15 + [False] * 3 + [True] * 6 + [False] * 5 + [False] * 21
SAME = [True] * 50 + [False] * 15 + [True] * 3 + [False] * 6 + [True] * 5 + [False] * 21


def smoke_sweep(root, seeds=(0, 1, 2)):
    job = 0
    for method, verdicts in (("full", BASE), ("topk", BETTER), ("adagradselect", SAME)):
        for seed in seeds:
            name, body, lines = smoke_record(method, "tiny-llama", seed, verdicts)
            write(root, f"{job}-{name}", body, lines)
            job += 1
    return root


def test_a_clear_difference_is_marked_and_noise_is_not(tmp_path):
    table = paired_table(collect([smoke_sweep(tmp_path)]), "full")
    better = table.display.loc[("tiny-llama", "arithmetic", "topk")]
    same = table.display.loc[("tiny-llama", "arithmetic", "adagradselect")]
    assert better["difference (points)"] == "+12.0*" and better["seeds"] == 3 and better["questions"] == "100/100/100"
    assert same["difference (points)"] == "-1.0" and "*" not in same["difference (points)"]
    data = table.data.set_index("method")
    # McNemar pooled over the three seeds: 45 right only with topk, 9 only with full.
    assert data.at["topk", "p_mcnemar"] == pytest.approx(binomtest(9, 54, 0.5).pvalue, abs=1e-9)
    assert data.at["adagradselect", "p_mcnemar"] == pytest.approx(binomtest(15, 33, 0.5).pvalue, abs=1e-9)
    assert data.at["topk", "p"] < 0.05 and data.at["adagradselect", "p"] > 0.5
    assert same["p (McNemar)"] == f"{data.at['adagradselect', 'p_mcnemar']:.3f}"
    # The interval is the hierarchical bootstrap (seeds, then questions) of the per-question differences.
    d = np.array(BETTER, float) - np.array(BASE, float)
    lo, hi = percentile_interval(hierarchical_bootstrap([d, d, d]))
    assert (data.at["topk", "lo"], data.at["topk", "hi"]) == (lo, hi)
    assert better["95% CI"] == f"{100 * lo:.1f}, {100 * hi:.1f}" and lo > 0


def test_two_seeds_mark_nothing_and_say_why(tmp_path):
    table = paired_table(collect([smoke_sweep(tmp_path, seeds=(0, 1))]), "full")
    better = table.display.loc[("tiny-llama", "arithmetic", "topk")]
    assert better["difference (points)"] == "+12.0" and better["note"] == "2 seed(s) < 3: not marked"
    assert table.data.set_index("method").at["topk", "ci_excludes_zero"]  # the interval alone would have marked it
    assert not any("*" in cell for cell in table.display["difference (points)"])


def test_runs_of_another_config_are_not_paired_as_the_same_method(tmp_path):
    smoke_sweep(tmp_path)
    name, body, lines = smoke_record("topk", "tiny-llama", 0, BASE)
    body["config"]["train"] = {"lr": 0.5}
    write(tmp_path, f"9-{name}-lr", body, lines)
    display = paired_table(collect([tmp_path]), "full").display
    methods = display.index.get_level_values("method").tolist()
    assert methods == ["topk [train.lr=0.5]", "topk [train.lr=unset]", "adagradselect"]
    assert display.loc[("tiny-llama", "arithmetic", "topk [train.lr=0.5]"), "seeds"] == 1


def test_questions_pair_by_id_not_by_position():
    ours = [{"eval_set": "s", "id": "b", "ok": True}, {"eval_set": "s", "id": "a", "ok": False},
            {"eval_set": "t", "id": "a", "ok": True}]
    base = [{"eval_set": "s", "id": "a", "ok": True}, {"eval_set": "s", "id": "b", "ok": False},
            {"eval_set": "s", "id": "c", "ok": True}]
    method, baseline = paired_verdicts(ours, base, "s", "ok")
    assert method.tolist() == [False, True] and baseline.tolist() == [True, False]


def test_runs_without_samples_say_so(tmp_path):
    table = paired_table(collect([paper_runs(tmp_path)]), "full").display
    assert table.loc[("m1", "gsm8k_test", "lora"), "note"] == "no samples.jsonl (cannot pair questions)"
    assert table.loc[("m2", "gsm8k_test", "lora"), "note"] == "no baseline run"  # m2's full runs all OOM


def test_another_baseline(tmp_path):
    table = paired_table(collect([smoke_sweep(tmp_path)]), "topk").display
    assert table.loc[("tiny-llama", "arithmetic", "full"), "difference (points)"] == "-12.0*"
    assert ("tiny-llama", "arithmetic", "topk") not in table.index
