"""analysis/tables.py: the papers' layout, cells that are what arithmetic says, failures named."""
from __future__ import annotations

import pytest

from analysis.collect import collect
from analysis.paper_numbers import COLUMNS, load_paper_numbers
from analysis.tables import accuracy_table, claims_table, efficiency_table, stat_cell
from analysis_records import paper_runs, record, smoke_record, write
from bench.records.stats import wilson_interval


@pytest.fixture
def runs(tmp_path):
    return collect([paper_runs(tmp_path / "runs")])


@pytest.fixture
def claims(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text(",".join(COLUMNS) + "\n"
                    "t,m1,full,,gsm8k_test,accuracy,value,58,src,\n"
                    "t,mean,lora,full,,peak_gpu_memory_gib,change_pct,-35,src,\n"
                    "t,m1,lora,full,,train_wall_clock_s,change_pct,-12,src,\n")
    return load_paper_numbers([path])


def test_stat_cell():
    assert stat_cell(62.25, 1.25, 3) == "62.2 ± 1.2 (n=3)"
    assert stat_cell(50.0, float("nan"), 1) == "50.0 (n=1)"
    assert stat_cell(50.0, 0.0, 2, failed=1, oom=2) == "50.0 ± 0.0 (n=2; 1 failed; 2 oom)"
    assert stat_cell(float("nan"), float("nan"), 0, oom=2) == "2 oom"
    assert stat_cell(float("nan"), float("nan"), 0) == ""
    assert stat_cell(62.25, 1.25, 3, lo=59.04, hi=65.46) == "62.2 ± 1.2 (n=3) [59.0, 65.5]"


def test_accuracy_table_layout_and_cells(runs, claims):
    table = accuracy_table(runs, claims).display
    assert table.columns.tolist() == [("m1", "gsm8k_test"), ("m1", "math500"), ("m2", "gsm8k_test"), ("m2", "math500")]
    assert table.index.tolist() == ["full", "full [paper]", "lora"]  # the paper's row under ours
    # 95% CI of the mean over 3 seeds: 60 ± t(0.975, 2) * 10 / sqrt(3) = 60 ± 24.84
    assert table.loc["full", ("m1", "gsm8k_test")] == "60.0 ± 10.0 (n=3) [35.2, 84.8]"
    assert table.loc["full", ("m1", "math500")] == "30.0 ± 10.0 (n=3) [5.2, 54.8]"
    assert table.loc["full [paper]", ("m1", "gsm8k_test")] == "58.0"
    assert table.loc["full [paper]", ("m2", "gsm8k_test")] == ""  # nobody published it: empty, not guessed
    assert table.loc["lora", ("m1", "gsm8k_test")] == "40.0 ± 0.0 (n=3; 1 failed) [40.0, 40.0]"
    assert table.loc["full", ("m2", "gsm8k_test")] == "2 oom"
    assert table.loc["lora", ("m2", "math500")] == "10.0 (n=1)"  # one run, no samples.jsonl: no interval


def test_one_run_shows_its_interval_over_questions(tmp_path):
    name, body, lines = smoke_record("full", "tiny-llama", 0, [True] * 7 + [False] * 3)
    write(tmp_path, f"0-{name}", body, lines)
    table = accuracy_table(collect([tmp_path])).display
    lo, hi = wilson_interval(7, 10)
    assert table.loc["full", ("tiny-llama", "arithmetic")] == f"70.0 (n=1) [{100 * lo:.1f}, {100 * hi:.1f}]"


def test_efficiency_table_changes_vs_full_and_frontier(runs, claims):
    table = efficiency_table(runs, "peak_gpu_memory_gib", claims).display
    lora = table.loc[("m1", "lora")]
    assert lora["peak GPU GiB"] == "6.00 ± 0.00 (n=3)"
    assert lora["Δ peak GPU GiB %"] == "-50.0"
    assert lora["train s"] == "90.0 ± 10.0 (n=3)" and lora["Δ train s %"] == "-10.0"
    # Seeds paired with full's: train s 80-100, 90-100, 100-100 = -20, -10, 0 s; t interval, in % of 100 s.
    assert lora["Δ train s % 95% CI"] == "-34.8, 14.8"
    # 6 - (10, 12, 14) = -4, -6, -8 GiB: -6 ± t(0.975, 2) * 2 / sqrt(3) = -6 ± 4.97 GiB, of 12 GiB
    assert lora["Δ peak GPU GiB % 95% CI"] == "-91.4, -8.6"
    assert lora["accuracy % 95% CI"] == "40.0, 40.0" and table.loc[("m1", "full"), "Δ train s % 95% CI"] == ""
    assert lora["Δ tokens/s %"] == "+25.0"
    assert lora["paper Δ train s %"] == "-12.0"
    assert lora["runs"] == "3 ok, 1 failed"
    # m1: full has more memory but more accuracy (45% vs 40%): both are on the frontier.
    assert table.loc[("m1", "full"), "frontier"] == "yes" and lora["frontier"] == "yes"
    # m2: full all OOM, lora recorded no memory: empty cells, no frontier, no crash.
    assert table.loc[("m2", "full"), "runs"] == "2 oom" and table.loc[("m2", "full"), "train s"] == ""
    assert table.loc[("m2", "lora"), "peak GPU GiB"] == "" and table.loc[("m2", "lora"), "Δ train s %"] == ""
    assert table.loc[("m2", "lora"), "frontier"] == ""
    # The mean over models averages the per-model changes that exist (m1 only), beside the paper's.
    mean = table.loc[("mean over models", "lora")]
    # m1 and m2 are no paper models: the paper's figure is marked, not set beside ours as comparable.
    assert mean["Δ peak GPU GiB %"] == "-50.0"
    assert mean["paper Δ peak GPU GiB %"] == "-35.0 [ours: not comparable (CPU / tiny model)]"


def test_a_dominated_method_is_off_the_frontier(tmp_path):
    for seed, (method, acc, mem) in enumerate([("full", 0.5, 10.0), ("lora", 0.4, 12.0), ("topk", 0.6, 8.0)]):
        write(tmp_path, f"{seed}-{method}", record(method, "m", 0, gsm8k=acc, peak_gpu_memory_gib=mem))
    table = efficiency_table(collect([tmp_path]), "peak_gpu_memory_gib").display
    assert table.xs("m", level="model")["frontier"].to_dict() == {"full": "", "lora": "", "topk": "yes"}


def test_claims_table_puts_paper_and_ours_side_by_side(runs, claims):
    table = claims_table(runs, claims).display.reset_index()
    memory = table[table["metric"] == "peak_gpu_memory_gib"].iloc[0]
    # m1 is no paper model: its GPU memory is not set beside the paper's claim.
    assert memory["paper value"] == "-35.0%" and memory["ours"] == "not comparable (CPU / tiny model)"
    runs = runs.assign(model=runs["model"].replace({"m1": "llama3.2-1b"}))
    memory = claims_table(runs, claims).display.reset_index().query("metric == 'peak_gpu_memory_gib'").iloc[0]
    assert memory["ours"] == "-50.0%" and memory["note"] == ""


def test_method_order_is_the_default_sweeps_and_new_methods_appear(tmp_path):
    from omegaconf import OmegaConf

    from analysis.tables import METHOD_ORDER, ordered_methods
    from conftest import REPO

    sweep = OmegaConf.load(REPO / "conf" / "config.yaml").hydra.sweeper.params.method
    assert METHOD_ORDER == sweep.split(",")
    for seed, method in enumerate(["zeta-method", "lora", "full", "alpha-method"]):
        write(tmp_path, f"{seed}-{method}", record(method, "m", 0, gsm8k=0.5))
    runs = collect([tmp_path])
    assert ordered_methods(runs["method"]) == ["full", "lora", "alpha-method", "zeta-method"]
    assert accuracy_table(runs).display.index.tolist() == ["full", "lora", "alpha-method", "zeta-method"]
