"""analysis/pooling.py through collect(): one row per run identity, pools of runs equal but for the seed."""
from __future__ import annotations

import socket
import subprocess
import sys

from analysis.collect import collect
from analysis.report import main
from analysis.tables import accuracy_table
from analysis_records import record, write


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _died(method: str, seed: int, start: float) -> dict:
    body = record(method, "m", seed)
    body.update({"status": "running", "host": socket.gethostname(), "pid": _dead_pid(), "started_at": start})
    body.pop("error", None)
    return body


def test_runs_that_differ_in_any_key_but_the_seed_are_never_pooled(tmp_path):
    for seed in (0, 1):
        write(tmp_path, f"a{seed}", record("full", "m", seed, gsm8k=0.5))
        other = record("full", "m", seed, gsm8k=0.9)
        other["config"]["train"]["max_steps"] = 40
        write(tmp_path, f"b{seed}", other)
    lr = record("full", "m", 2, gsm8k=0.1)
    lr["config"]["train"]["lr"] = 3e-5
    write(tmp_path, "c2", lr)
    data_edit = record("full", "m", 3, gsm8k=0.2)
    data_edit["data_files"] = {"train.jsonl": "0" * 64}
    write(tmp_path, "d3", data_edit)
    runs = collect([tmp_path])
    assert len(runs) == 6 and set(runs["method_name"]) == {"full"}
    assert runs["method"].nunique() == 4  # four pools, each its own row
    table = accuracy_table(runs).display
    cells = {label: table.loc[label, ("m", "gsm8k_test")] for label in table.index}
    assert sorted(cells.values()) == ["10.0 (n=1)", "20.0 (n=1)", "50.0 ± 0.0 (n=2) [50.0, 50.0]",
                                      "90.0 ± 0.0 (n=2) [90.0, 90.0]"]
    # Each row is named by the keys that set it apart.
    assert cells["full [data_files=unset, train.lr=0.0001, train.max_steps=40]"].startswith("90.0")
    assert cells["full [data_files=unset, train.lr=3e-05, train.max_steps=unset]"].startswith("10.0")


def test_a_repeated_run_counts_once_the_newest(tmp_path, capsys):
    for name, (start, accuracy) in {"old": (100.0, 0.2), "new": (200.0, 0.6), "middle": (150.0, 0.4)}.items():
        body = record("full", "m", 0, gsm8k=accuracy)
        body["started_at"] = start
        write(tmp_path, name, body)
    runs = collect([tmp_path])
    assert len(runs) == 1 and runs["run_dir"].iloc[0].endswith("new") and runs["accuracy"].iloc[0] == 0.6
    assert sorted(d["run_dir"].rsplit("/", 1)[1] for d in runs.attrs["superseded"]) == ["middle", "old"]
    main([str(tmp_path), "--no-plots"])
    out = capsys.readouterr().out
    assert "2 records repeat a run listed above (same config and seed) and are not counted" in out
    assert "| full | 60.0 (n=1) |" in out


def test_a_died_record_superseded_by_an_ok_one_is_dropped(tmp_path, capsys):
    write(tmp_path, "0-full-died", _died("full", 0, start=100.0))
    ok = record("full", "m", 0, gsm8k=0.5)
    ok["started_at"] = 50.0  # even an older ok record wins over a died one
    write(tmp_path, "1-full-ok", ok)
    write(tmp_path, "2-lora-died", _died("lora", 0, start=100.0))
    runs = collect([tmp_path]).set_index("method")
    assert runs.loc["full", "status"] == "ok" and runs.loc["lora", "status"] == "died"
    main([str(tmp_path), "--no-plots"])
    out = capsys.readouterr().out
    assert "1 of 2 runs did not finish ok:" in out and "nan" not in out.split("did not finish ok:")[1].split("\n\n")[0]
    assert "died: " in out and "its process is gone and left no result" in out
    assert "died: " + str(tmp_path / "0-full-died") in out  # listed among the records not counted


def test_duplicate_seeds_without_a_config_are_warned_about(tmp_path, capsys):
    for name in ("a", "b"):
        body = record("full", "m", 0, gsm8k=0.5)
        body["config"] = {}
        write(tmp_path, name, body)
    main([str(tmp_path), "--no-plots"])
    assert "warning: metamathqa / m / full: seed 0 x2" in capsys.readouterr().out
