"""analysis/callbacks.py: the tables a multirun prints when it ends, one row per run, then each
method's mean over seeds with the interval slmbench-report's accuracy table gives it."""
from __future__ import annotations

from omegaconf import OmegaConf

from analysis.callbacks import PrintSweepTable
from analysis_records import record, write


def sweep_end(sweep_dir, capsys) -> str:
    PrintSweepTable().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))
    return capsys.readouterr().out


def test_seeds_of_a_method_share_a_row_with_their_t_interval(tmp_path, capsys):
    for seed, accuracy in enumerate([0.5, 0.6, 0.7]):
        write(tmp_path, f"{seed}-full", record("full", "m", seed, gsm8k=accuracy))
    write(tmp_path, "3-lora", record("lora", "m", 0, gsm8k=0.4))
    write(tmp_path, "4-lora", record("lora", "m", 1, status="failed"))
    runs, summary = sweep_end(tmp_path, capsys).split("Mean over seeds")
    assert runs.count("| m | metamathqa |") == 5  # every run, the failed one too
    assert "Student t interval of the mean over seeds" in summary  # the header says what the interval is
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "| m |" in line]
    # 0.6 ± t(0.975, 2) * 0.1 / sqrt(3) = 0.6 ± 0.248; lora: one ok seed, no spread, the failed one named
    assert rows == ["| full | m | metamathqa | 3 | 0.600 | 0.100 | 0.352, 0.848 |",
                    "| lora | m | metamathqa | 1 (1 not ok) | 0.400 |  |  |"]


def test_one_seed_per_method_prints_no_mean_over_seeds(tmp_path, capsys):
    write(tmp_path, "0-full", record("full", "m", 0, gsm8k=0.5))
    write(tmp_path, "1-lora", record("lora", "m", 0, gsm8k=0.4))
    out = sweep_end(tmp_path, capsys)
    assert out.count("| m | metamathqa |") == 2 and "Mean over seeds" not in out
