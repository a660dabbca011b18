"""Hostile cases a new user meets: failures with W&B on, signals, two copies of one run, killed
runs, edited data, reused runs, and bad input that must be refused at start in one line.
Real CLI processes (tests/conftest.py::run_cli), W&B offline where the case needs it."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.collect import collect
from analysis.report import main as report_main
from bench.records.recorder import write_json_atomic
from conftest import FIXTURES, HUB_TOKENIZERS, REPO, result_files, run_cli

QUICK = ("train.max_steps=3", "eval.limit=4", "wandb.mode=disabled")
LONG = ("train.max_steps=5000", "eval.limit=4")  # stopped by a signal long before the end
GSM8K_TINY = ("task=gsm8k", "model=tiny-qwen2.5", "train.max_steps=2", "train.batch_size=2",
              "train.warmup_steps=0", "train.max_seq_len=320", "eval.limit=2", "eval.max_new_tokens=4",
              "wandb.mode=disabled", "device=cpu")
OFFLINE = {"HF_HUB_OFFLINE": "1"}


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(result_files(root / "outputs" / "runs"))]


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _wait_for_steps(proc: subprocess.Popen, cwd: Path, steps: int) -> None:
    """Until the run has logged `steps` optimizer steps (it is then inside the training loop)."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = list((cwd / "outputs" / "runs").rglob("metrics.jsonl")) if (cwd / "outputs").exists() else []
        if logs and len(logs[0].read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)
    out, err = proc.communicate()
    raise AssertionError(f"the run ended (rc {proc.returncode}) before {steps} steps\n{err[-3000:]}")


def _checkpoints(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "store").glob("*/checkpoints/step-*"))


# 1. The failure path with W&B on.

def _strict(text: str):
    """json.loads refusing NaN/Infinity, as strict parsers do."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_diverging_run_with_wandb_offline_records_failed_diverged_and_finishes_wandb(tmp_path, cache_dir):
    proc = run_cli(tmp_path, "train.lr=1e6", "train.max_steps=20", "eval.limit=20",
                   "wandb.mode=offline", f"cache_dir={cache_dir}", check=False)
    assert proc.returncode != 0
    assert "AttributeError" not in proc.stderr, proc.stderr[-3000:]
    (path,) = result_files(tmp_path / "outputs" / "runs")
    record = _strict(path.read_text())
    assert record["status"] == "failed" and record["error"]["reason"] == "diverged"
    assert 1 <= record["error"]["step"] < 20
    for line in (path.parent / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    # The offline run's log holds the summary the recorder wrote (status "failed") and was finished.
    (wandb_log,) = (tmp_path / "outputs" / "runs").rglob("offline-run-*/run-*.wandb")
    assert re.search(rb'status.{1,8}"failed"', wandb_log.read_bytes())
    assert "finishing run" in (wandb_log.parent / "logs" / "debug.log").read_text()


def test_sigterm_with_wandb_offline_exits_143_with_a_preempted_record_and_a_checkpoint(tmp_path, cache_dir):
    proc = _start(tmp_path, *LONG, "wandb.mode=offline", f"cache_dir={cache_dir}")
    _wait_for_steps(proc, tmp_path, 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    (record,) = _records(tmp_path)
    assert record["status"] == "preempted" and record["error"]["step"] >= 5
    assert _checkpoints(tmp_path)


def test_a_full_disk_fails_with_one_traceback_a_record_and_no_half_checkpoint(tmp_path, cache_dir):
    """A 256 KiB tmpfs holds the run dir's records but not the end-of-training checkpoint: the failed
    write removes its .tmp (freeing the space the failed record needs) and the run exits non-zero
    with one traceback. Needs root (mount); skipped otherwise."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        proc = run_cli(tmp_path, *QUICK, f"cache_dir={cache_dir}", f"store_dir={disk}/store",
                       f"hydra.run.dir={disk}/run", check=False, timeout=300)
        assert proc.returncode not in (0, 2), proc.stderr[-3000:]
        assert proc.stderr.count("Traceback (most recent call last)") <= 1 and "No space left" in proc.stderr
        assert "During handling of the above exception" not in proc.stderr, proc.stderr[-3000:]
        assert not list(disk.rglob("*.tmp"))
        record = json.loads((disk / "run" / "result.json").read_text())
        assert record["status"] == "failed" and "No space left" in record["error"]["message"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# 2. Identity: the data files' contents, and the commit.

def _gsm8k_files(root: Path) -> tuple[Path, Path]:
    train, test = root / "train.jsonl", root / "test.jsonl"
    rows = (FIXTURES / "gsm8k" / "train.jsonl").read_text().splitlines()
    train.write_text("\n".join(rows[:8]) + "\n")
    test.write_text("\n".join((FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]) + "\n")
    return train, test


@HUB_TOKENIZERS
def test_a_data_file_edited_in_place_is_a_new_run_not_a_stale_skip(tmp_path, cache_dir):
    train, test = _gsm8k_files(tmp_path)
    args = (*GSM8K_TINY, f"task.train.path={train}", f"task.eval.gsm8k_test.path={test}", f"cache_dir={cache_dir}")
    run_cli(tmp_path, *args, env=OFFLINE)
    rows = train.read_text().splitlines()
    train.write_text("\n".join(reversed(rows)) + "\n")  # same config, other data
    again = run_cli(tmp_path, *args, env=OFFLINE)
    assert "already finished" not in again.stdout + again.stderr
    first, second = _records(tmp_path)
    assert "reused_from" not in second and first["run_key"] != second["run_key"]
    assert set(second["data_files"]) == {str(train), str(test)}
    assert first["data_files"][str(train)] != second["data_files"][str(train)]
    assert second["env"]["git_sha"]  # the record names its commit


def test_run_key_changes_with_data_contents_only(tmp_path):
    from bench.run.resume import data_file_hashes, run_key  # here: a missing name fails this test only

    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "1+1", "answer": "#### 2"}\n')
    task = {"train": {"path": str(path)}, "eval": {"test": {"path": str(path)}, "hub_set": {"hub": "x"}}}
    config = {"seed": 0, "task": task}
    before = data_file_hashes(task)
    path.write_text('{"question": "1+2", "answer": "#### 3"}\n')
    after = data_file_hashes(task)
    assert list(before) == [str(path)] and before != after
    assert run_key(config, before) != run_key(config, after) and run_key(config, after) == run_key(config, after)


def test_report_flags_runs_from_mixed_commits(tmp_path, capsys):
    for name, sha in (("0-full", "1111111111aaaa"), ("1-full", "2222222222bbbb")):
        record = {"status": "ok", "method": "full", "model": "m", "task": "t", "seed": int(name[0]),
                  "run_dir": str(tmp_path / name), "metrics": {"accuracy": 0.5}, "env": {"git_sha": sha}}
        write_json_atomic(tmp_path / name / "result.json", record)
    report_main([str(tmp_path), "--no-plots", "--out", str(tmp_path / "report")])
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "1111111111" in warning[0] and "2222222222" in warning[0]


# 3. One run store, one process.

def test_a_second_identical_run_is_refused_while_the_first_runs(tmp_path, cache_dir):
    args = (*LONG, "wandb.mode=disabled", "train.checkpoint_every=2", f"cache_dir={cache_dir}")
    first = _start(tmp_path, *args)
    try:
        _wait_for_steps(first, tmp_path, 3)
        second = run_cli(tmp_path, *args, check=False, timeout=120)
    finally:
        first.send_signal(signal.SIGTERM)
        _, first_err = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr[-3000:]
    message = second.stderr.strip().splitlines()
    assert len(message) == 1 and f"pid {first.pid}" in message[0] and socket.gethostname() in message[0]
    assert first.returncode == 128 + signal.SIGTERM, first_err[-3000:]  # the first was left alone
    statuses = sorted(r["status"] for r in _records(tmp_path))
    assert statuses == ["preempted"] and _checkpoints(tmp_path)  # the refusal wrote no record


# 4. The report reads each run once.

def test_report_with_no_argument_counts_each_run_once(tmp_path, cache_dir):
    run_cli(tmp_path, "method=none", *QUICK, f"cache_dir={cache_dir}")
    assert list((tmp_path / "outputs" / "store").glob("*/result.json"))  # the store's copy is there
    runs = collect([tmp_path / "outputs"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "ok"


# 5. Killed and interrupted runs.

def test_a_sigkilled_run_shows_as_died(tmp_path, cache_dir):
    proc = _start(tmp_path, *LONG, "wandb.mode=disabled", f"cache_dir={cache_dir}")
    _wait_for_steps(proc, tmp_path, 3)
    proc.kill()
    proc.communicate(timeout=60)
    (record,) = _records(tmp_path)
    assert record["status"] == "running" and record["pid"] == proc.pid and record["host"] == socket.gethostname()
    assert record["started_at"] > 0
    runs = collect([tmp_path / "outputs" / "runs"])
    assert list(runs["status"]) == ["died"]


def test_sigint_checkpoints_and_records_interrupted(tmp_path, cache_dir):
    proc = _start(tmp_path, *LONG, "wandb.mode=disabled", f"cache_dir={cache_dir}")
    _wait_for_steps(proc, tmp_path, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    (record,) = _records(tmp_path)
    assert record["status"] == "interrupted" and record["error"]["step"] >= 3
    assert _checkpoints(tmp_path)


# 6. Bad input, refused at start in one line; records readable and complete.

def _binary_file(root: Path) -> Path:
    path = root / "train.bin.jsonl"
    path.write_bytes(bytes(range(255, -1, -1)) * 64)  # 16 KiB that are not UTF-8 from the first byte
    return path


BAD_INPUT = {
    "eval_limit_zero": (lambda root: ("eval.limit=0",), "eval.limit"),
    "max_steps_zero": (lambda root: ("train.max_steps=0",), "train.max_steps"),
    "misspelt_key_added": (lambda root: ("+train.lrr=1",), "train.lrr"),
    "store_not_writable": (lambda root: (f"store_dir={_a_file(root)}/store",), "store_dir"),
    "binary_data_file": (lambda root: ("task=gsm8k", "model=tiny-qwen2.5", f"task.train.path={_binary_file(root)}",
                                       f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl"),
                         "train.bin.jsonl:1 is not UTF-8 JSON"),
    "directory_data_file": (lambda root: ("task=gsm8k", "model=tiny-qwen2.5", f"task.train.path={root}",
                                          f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl"),
                            "task.train.path"),
    # more refusals, checked in-process: tests/test_reliability.py test_bad_input_is_refused_before_training
    "method_knob_out_of_range": (lambda root: ("method=topk", "method.k_percent=0"), "method.k_percent"),
    "model_path_garbage_dir": (lambda root: (f"model.path={_garbage_dir(root)}",), "not a saved model dir"),
}


def _garbage_dir(root: Path) -> Path:
    path = root / "garbage"
    path.mkdir()
    (path / "notes.txt").write_text("not a model")
    return path


def _a_file(root: Path) -> Path:
    """A store_dir below a regular file cannot be created, even by root (who ignores modes)."""
    path = root / "a-file"
    path.write_text("not a directory")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_at_start_in_one_line(tmp_path, cache_dir, case):
    make_args, named = BAD_INPUT[case]
    args = make_args(tmp_path)
    quick = [a for a in QUICK if a.split("=")[0] not in {b.split("=")[0] for b in args}]
    proc = run_cli(tmp_path, *quick, f"cache_dir={cache_dir}", *args, check=False, env=OFFLINE, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1 and named in message[0] and len(message[0]) < 400, proc.stderr[-3000:]
    assert not any(p.read_text() for p in tmp_path.rglob("metrics.jsonl"))  # refused before any step
    assert not _records(tmp_path)  # a refusal is not a run: no `failed` record counts against the method


def test_records_are_readable_by_everyone(tmp_path):
    write_json_atomic(tmp_path / "result.json", {"status": "ok"})
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o644


def test_a_reused_run_dir_is_complete_after_the_original_is_deleted(tmp_path, cache_dir):
    args = ("method=full", *QUICK, f"cache_dir={cache_dir}")
    run_cli(tmp_path, *args)
    (original,) = _records(tmp_path)
    metrics = (Path(original["run_dir"]) / "metrics.jsonl").read_text()
    samples = (Path(original["run_dir"]) / "samples.jsonl").read_text()
    subprocess.run(["rm", "-r", original["run_dir"]], check=True)
    again = run_cli(tmp_path, *args)
    assert "already finished" in again.stdout + again.stderr
    (reused,) = _records(tmp_path)
    run_dir = Path(reused["run_dir"])
    assert reused["reused_from"] == original["run_dir"] and run_dir != Path(original["run_dir"])
    assert (run_dir / "metrics.jsonl").read_text() == metrics and len(metrics.splitlines()) == 3
    assert (run_dir / "samples.jsonl").read_text() == samples
    assert reused["metrics"] == original["metrics"]
