"""analysis/report.py (`slmbench-report`): tables printed and written next to the records, plots,
errors that name the file; and a smoke paper sweep run end to end through Hydra and the report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import main
from analysis_records import paper_runs, record, write
from conftest import REPO, run_cli


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`slmbench-report ARGS` as a real process (the console script is `analysis.report:main`)."""
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def test_report_prints_and_writes_every_table_and_plot(tmp_path, capsys):
    root = paper_runs(tmp_path / "sweep")
    main([str(root)])
    out = capsys.readouterr().out
    assert "## Runs (10)" in out and out.count("| metamathqa |") == 10  # a row for every run
    assert "3 of 10 runs did not finish ok:" in out and "oom: " in out
    assert "6 published claims are about methods not in these runs (adagradselect): left out" in out
    assert "| full | 60.0 ± 10.0 (n=3) [35.2, 84.8] |" in out
    assert "| accuracy | 95% CI | peak GPU GiB |" in out  # the runs table
    assert "## Against full on the same questions" in out and "| 95% CI | p (bootstrap) | p (McNemar) |" in out
    report = root / "report"  # next to the records
    for stem in ("accuracy", "efficiency", "paired", "paper_vs_ours"):
        for ext in ("md", "csv", "tex"):
            assert (report / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    assert r"\multicolumn" in (report / "accuracy.tex").read_text()  # models as column groups
    assert r"$\pm$" in (report / "accuracy.tex").read_text()
    assert len(pd.read_csv(report / "runs.csv")) == 10
    assert (report / "accuracy_vs_memory.png").exists() and (report / "train_time.png").exists()


def test_the_abstract_claims_sit_beside_our_adagradselect_runs(tmp_path, capsys):
    for seed, (method, memory, seconds) in enumerate([("full", 10.0, 100.0), ("full", 14.0, 100.0),
                                                       ("adagradselect", 7.8, 88.0), ("adagradselect", 7.8, 88.0)]):
        write(tmp_path, f"{seed}-{method}", record(method, "qwen2.5-0.5b", seed, gsm8k=0.5,
                                                   peak_gpu_memory_gib=memory, train_wall_clock_s=seconds))
    main([str(tmp_path), "--no-plots"])
    out = capsys.readouterr().out
    # 7.8 vs 12 GiB is -35%, 88 vs 100 s is -12%: ours equals the paper's claim here by construction.
    assert "| peak_gpu_memory_gib | change_pct | -35.0% | -35.0% | metamathqa/qwen2.5-0.5b |" in out
    assert "| train_wall_clock_s | change_pct | -12.0% | -12.0% | metamathqa/qwen2.5-0.5b |" in out
    assert "| mean over models | adagradselect |" in out and "| -35.0 |  | -35.0 |" in out
    # The authors' "up to 35%" sits beside our best model (the only one here).
    assert ("| best | adagradselect | full |  | peak_gpu_memory_gib | change_pct | -35.0% | -35.0% | "
            "metamathqa/qwen2.5-0.5b |") in out


def test_a_paper_time_claim_beside_cpu_runs_reads_not_comparable(tmp_path, capsys):
    for seed, (method, seconds) in enumerate([("full", 100.0), ("adagradselect", 36.3)]):
        body = record(method, "tiny-llama", 0, gsm8k=0.5, train_wall_clock_s=seconds, peak_host_rss_gib=1.0)
        body["env"]["device_name"] = "cpu"
        write(tmp_path, f"{seed}-{method}", body)
    main([str(tmp_path), "--no-plots"])
    claims = capsys.readouterr().out.split("## The papers' claims beside ours")[1]
    assert "| train_wall_clock_s | change_pct | -12.0% | not comparable (CPU / tiny model) |" in claims
    assert "-63.7%" not in claims


def test_shared_device_runs_get_no_time_ratio_without_the_flag(tmp_path, capsys):
    for seed, (method, seconds, jobs) in enumerate([("full", 100.0, 1), ("adagradselect", 88.0, 2)]):
        body = record(method, "qwen2.5-0.5b", 0, gsm8k=0.5, train_wall_clock_s=seconds, peak_gpu_memory_gib=10.0)
        body["device_share"] = {"gpu_uuid": "GPU-1", "jobs_on_device_max": jobs, "launcher_jobs_per_gpu": 2}
        write(tmp_path, f"{seed}-{method}", body)
    main([str(tmp_path), "--no-plots"])
    out = capsys.readouterr().out
    assert "note: 1 of 2 runs shared their GPU with other jobs" in out and "--allow-shared-timings keeps them" in out
    assert "| train_wall_clock_s | change_pct | -12.0% |  |" in out  # ours: refused
    assert "| qwen2.5-0.5b | adagradselect | 50.0 (n=1) |  |  |  |  |  |  |  |" in out  # no memory, no time
    main([str(tmp_path), "--no-plots", "--allow-shared-timings"])
    out = capsys.readouterr().out
    assert "shared their GPU" not in out and "| train_wall_clock_s | change_pct | -12.0% | -12.0% |" in out


def test_the_paired_table_in_the_report_marks_a_clear_difference(tmp_path, capsys):
    from test_analysis_comparison import smoke_sweep

    main([str(smoke_sweep(tmp_path)), "--no-plots"])
    out = capsys.readouterr().out
    assert "| tiny-llama | arithmetic | topk | full | 3 | 100/100/100 | +12.0* |" in out
    assert "| tiny-llama | arithmetic | adagradselect | full | 3 | 100/100/100 | -1.0 |" in out
    assert "hierarchical bootstrap resampling seeds, then questions" in out  # the header says which
    main([str(tmp_path), "--no-plots", "--baseline", "adagradselect"])
    assert "| tiny-llama | arithmetic | topk | adagradselect | 3 | 100/100/100 | +13.0* |" in capsys.readouterr().out


def test_two_seeds_give_no_star(tmp_path, capsys):
    from test_analysis_comparison import smoke_sweep

    main([str(smoke_sweep(tmp_path, seeds=(0, 1))), "--no-plots"])
    paired = capsys.readouterr().out.split("## Against full")[1].split("\n## ")[0]
    assert "| topk | full | 2 | 100/100 | +12.0 |" in paired and "*" not in paired.split("\n", 1)[1]
    assert "2 seed(s) < 3: not marked" in paired


def test_paper_numbers_and_out_options(tmp_path, capsys):
    root = paper_runs(tmp_path / "sweep")
    mine = tmp_path / "mine.csv"
    mine.write_text("paper,model,method,baseline,task,metric,kind,value,source,note\n"
                    "mine,m1,lora,,gsm8k_test,accuracy,value,41.5,my table,\n")
    main([str(root), "--paper-numbers", str(mine), "--out", str(tmp_path / "elsewhere"), "--no-plots"])
    out = capsys.readouterr().out
    assert "| lora [paper] | 41.5 |" in out
    assert (tmp_path / "elsewhere" / "accuracy.md").exists() and not (root / "report").exists()
    assert not (tmp_path / "elsewhere" / "train_time.png").exists()


def test_cpu_runs_plot_accuracy_against_trainable_parameters(tmp_path, capsys):
    write(tmp_path, "0-full", record("full", "m", 0, gsm8k=0.5, peak_host_rss_gib=1.0, train_wall_clock_s=3.0,
                                     trainable_params=1000))
    write(tmp_path, "1-lora", record("lora", "m", 0, gsm8k=0.5, peak_host_rss_gib=1.0, train_wall_clock_s=2.0,
                                     trainable_params=10))
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "note: no run recorded peak_gpu_memory_gib" in out and "against trainable parameters" in out
    assert not (tmp_path / "report" / "accuracy_vs_memory.png").exists()
    assert (tmp_path / "report" / "accuracy_vs_trainable_params.png").exists()
    main([str(tmp_path), "--memory-metric", "peak_host_rss_gib"])
    assert (tmp_path / "report" / "accuracy_vs_memory.png").exists()


def test_a_sweep_where_every_run_failed_still_reports_them(tmp_path, capsys):
    write(tmp_path, "0-full", record("full", "m", 0, status="oom"))
    write(tmp_path, "1-lora", record("lora", "m", 0, status="failed"))
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "| full | m | metamathqa | 0 | oom |" in out and "| lora | m | metamathqa | 0 | failed |" in out
    assert "2 of 2 runs did not finish ok:" in out
    assert "| m | full |" in out and "| 1 oom |" in out  # the efficiency table keeps the row


def test_a_schema_error_exits_2_naming_the_file(tmp_path):
    write(tmp_path, "0-good", record("full", "m", 0, gsm8k=0.5))
    bad = write(tmp_path, "1-bad", {"status": "ok", "method": "full", "model": "m", "task": "t"})
    proc = report_cli(str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"slmbench-report: {bad}: result record has no 'metrics' key" in proc.stderr


def test_smoke_sweep_end_to_end(tmp_path, cache_dir):
    """A real Hydra multirun of the smoke experiment (model axis narrowed to one tiny model on the
    command line, which wins over the experiment's sweep: 5 methods x 2 seeds), then the report."""
    proc = run_cli(tmp_path, "-m", "+experiment=adagradselect_paper_smoke", "model=tiny-llama",
                   f"cache_dir={cache_dir}")
    assert "slmbench sweep:" in proc.stdout  # the multirun-end table still prints
    (sweep,) = (tmp_path / "outputs" / "multirun" / "adagradselect_paper_smoke").iterdir()
    methods = ["full", "lora-r128", "lora", "topk", "adagradselect"]
    expected_dirs = [f"{2 * i + seed}-{m}-tiny-llama-s{seed}" for i, m in enumerate(methods) for seed in (0, 1)]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(expected_dirs)

    report = report_cli(str(sweep), "--memory-metric", "peak_host_rss_gib", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    runs = pd.read_csv(sweep / "report" / "runs.csv")
    assert len(runs) == 10 and set(runs["status"]) == {"ok"}  # a row for every run
    assert sorted(zip(runs["method"], runs["seed"])) == sorted((m, seed) for m in methods for seed in (0, 1))
    assert runs.loc[runs["method"] == "lora-r128", "cfg/method.r"].tolist() == [128, 128]
    assert set(runs["cfg/train.lr"]) == {1e-3}  # the experiment's per-method learning rates resolved
    runs_section = report.stdout.split("## Runs (10)")[1].split("\n## ")[0]
    assert runs_section.count("| tiny-llama | arithmetic |") == 10  # the other tables name these columns too
    accuracy = (sweep / "report" / "accuracy.md").read_text()
    for method in methods:
        assert f"| {method} |" in accuracy and "(n=2)" in accuracy
    assert (sweep / "report" / "accuracy_vs_memory.png").exists()
    assert (sweep / "report" / "train_time.png").exists()


def test_the_tokens_per_s_column_has_one_format(tmp_path, capsys):
    for seed, tokens in enumerate([431.317, 1129.4]):
        write(tmp_path, f"{seed}-full", record("full", "m", seed, gsm8k=0.5, train_tokens_per_s=tokens))
    main([str(tmp_path), "--no-plots"])
    runs = capsys.readouterr().out.split("## Runs (2)")[1].split("\n\n")[1]
    assert "|  | 431 |  |" in runs and "|  | 1,129 |  |" in runs and "431.317" not in runs
