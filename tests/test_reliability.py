"""What a run does when things go wrong: divergence, stop signals at any phase, two runs in one run
dir, full disks, corrupt store records, secrets in the config, and the method knobs' one home.
In-process runs (a random-init tiny model, a few steps) where a process adds nothing; one real
process for the signal during evaluation."""
from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
from hydra.utils import get_class

from bench.cli import input_error, run_job
from bench.config.checks import check_run_dir
from bench.errors import ConfigError
from bench.records.recorder import REDACTED
from bench.run.resume import Diverged, Preempted, PreemptionSignals
from bench.run.store import RunStore
from conftest import CONF, REPO, SHARED_DATA, absent, compose_config, result_files

QUICK = ("train.max_steps=3", "train.batch_size=8", "train.warmup_steps=0", "eval.limit=4",
         "wandb.mode=disabled", "device=cpu")


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as strict parsers (JavaScript, jq, Go) do."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


CACHE = REPO / "outputs" / "test-cache"  # the cached tiny base (tests/conftest.py cache_dir)


def _run(run_dir: Path, *overrides: str, method: str = "full") -> dict:
    cfg = compose_config(f"method={method}", *QUICK, f"cache_dir={CACHE}", *overrides)
    return run_job(cfg, run_dir, {"method": method, "model": cfg.model.name, "task": cfg.task.name})


# Divergence: a non-finite loss or gradient norm stops the run; every record is strict JSON.

@pytest.mark.parametrize("log_every", [1, 2])
def test_a_diverged_run_is_failed_with_reason_and_step_in_strict_json(tmp_path, cache_dir, log_every):
    with pytest.raises(Diverged):
        _run(tmp_path / "run", "train.lr=1e6", "train.max_steps=12", "train.warmup_steps=10", "train.batch_size=32",
             f"train.log_every={log_every}")
    record = strict_json((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "failed" and record["error"]["reason"] == "diverged"
    assert 1 <= record["error"]["step"] < 12 and record["error"]["step"] % log_every == 0  # found when the loss is read
    rows = [strict_json(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == record["error"]["step"]
    assert not list((tmp_path / "outputs" / "store").glob("*/checkpoints/step-*"))  # no diverged state kept


# Stop signals at any phase.

@pytest.mark.parametrize("returncode, exits", [(-signal.SIGTERM, True), (1, False)])
def test_a_requeue_command_killed_by_its_own_requeue_exits_as_a_requeued_job(returncode, exits):
    """The signal is handed on to the handler before ours (submitit's, which runs `scontrol requeue`).
    If that command dies of a signal (the requeue signals the whole job), the job exits as a requeued
    job does, with no result, instead of raising an error that would end it as a finished run. A
    requeue that failed on its own (an exit code) is raised on."""
    def requeue(signum, frame):
        raise subprocess.CalledProcessError(returncode, ["scontrol", "requeue", "1_2"])

    previous = signal.signal(signal.SIGUSR1, requeue)
    try:
        with PreemptionSignals() as signals:
            if exits:
                with pytest.raises(SystemExit) as stop:
                    signals.redeliver(signal.SIGUSR1)
                assert stop.value.code == 128 + signal.SIGUSR1
                assert isinstance(stop.value.__cause__, subprocess.CalledProcessError)
            else:
                with pytest.raises(subprocess.CalledProcessError):
                    signals.redeliver(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stop_signal_outside_training_steps_stops_at_once_and_inside_waits_for_the_step():
    with PreemptionSignals() as signals:
        signals.phase = "evaluation"
        with pytest.raises(Preempted, match="SIGTERM during evaluation"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises long before this ends
    with PreemptionSignals() as signals:
        signals.deferred = True
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.1)
        assert signals.received == signal.SIGUSR1  # only flagged: the loop checkpoints, then stops
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def _checkpoint_steps(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "outputs" / "store").glob("*/checkpoints/step-*") if p.suffix != ".tmp")


def test_sigterm_during_evaluation_exits_143_and_the_relaunch_only_evaluates(tmp_path, cache_dir):
    # eval.batch_size=1 over every question: the signal is sent as soon as the evaluation's progress
    # bar appears, well before its 180 one-question batches end
    args = ("train.max_steps=3", "eval.batch_size=1", "wandb.mode=disabled", f"cache_dir={cache_dir}")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        while "eval arithmetic" not in "".join(seen) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert _checkpoint_steps(tmp_path) == ["step-00000003"]  # the end-of-training checkpoint came first
        proc.send_signal(signal.SIGTERM)
        sent = time.time()
        proc.wait(timeout=120)
        reader.join(timeout=10)
        err = "".join(seen)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 128 + signal.SIGTERM and time.time() - sent < 30, err[-3000:]
    (record,) = [strict_json(p.read_text()) for p in result_files(tmp_path / "outputs" / "runs")]
    assert record["status"] == "preempted" and "during evaluation" in record["error"]["message"]

    relaunch = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=tmp_path, text=True, capture_output=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    records = [strict_json(p.read_text()) for p in result_files(tmp_path / "outputs" / "runs")]
    resumed = next(r for r in records if r["status"] == "ok")
    assert resumed["resumed_from_step"] == 3 and "checkpoint saved" not in relaunch.stderr  # no step trained
    assert resumed["metrics"]["final_train_loss"] is not None
    assert [json.loads(line)["step"] for line in (Path(resumed["run_dir"]) / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


# One run per run dir.

def test_a_run_dir_holding_another_runs_record_is_refused(tmp_path):
    first = _run(tmp_path / "run", method="none")
    before = (tmp_path / "run" / "result.json").read_text()
    with pytest.raises(ConfigError, match="holds another run's record"):
        _run(tmp_path / "run", "seed=1", method="none")
    assert (tmp_path / "run" / "result.json").read_text() == before and first["status"] == "ok"
    with pytest.raises(ConfigError, match="filesystem root"):
        check_run_dir(Path("/"), first["run_key"])


# Full disks: the checkpoint's .tmp goes, the record's failure is logged once, the run's own error is raised.

def test_a_full_disk_cleans_up_logs_the_lost_record_once_and_raises_the_runs_error(tmp_path, monkeypatch, caplog):
    def full_disk(what):
        def write(*args, **kwargs):
            raise OSError(errno.ENOSPC, f"No space left on device ({what})")
        return write

    monkeypatch.setattr("bench.run.checkpoint.torch.save", full_disk("checkpoint"))
    monkeypatch.setattr("bench.records.recorder.write_json_atomic", full_disk("record"))  # the failed record too
    with caplog.at_level(logging.ERROR), pytest.raises(OSError) as raised:
        _run(tmp_path / "run")
    # the run's own error, alone: not the record's error chained onto it (one traceback)
    assert "(checkpoint)" in str(raised.value)
    assert "".join(traceback.format_exception(raised.value)).count("Traceback (most recent call last)") == 1
    assert not list((tmp_path / "outputs" / "store").rglob("*.tmp"))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert str(tmp_path / "run" / "result.json") in errors[0] and "(record)" in errors[0] and "(checkpoint)" in errors[0]


# A corrupt finished record in the store: named, then the run runs again.

def test_a_corrupt_store_record_is_named_and_rerun(tmp_path, caplog):
    store = RunStore(tmp_path / "store", "somekey")
    store.root.mkdir(parents=True)
    store.result.write_text('{"status": "ok", "metr')
    with caplog.at_level(logging.WARNING):
        assert store.finished_record() is None
    assert str(store.result) in caplog.text and "runs again" in caplog.text


# Start-time checks: refused before training, with no record.

def test_an_unwritable_save_model_target_is_refused_before_training(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model").write_text("a file where the model dir would go")
    with pytest.raises(ConfigError, match="train.save_model=true"):
        _run(tmp_path / "run", "train.save_model=true")
    assert not (tmp_path / "run" / "result.json").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not (tmp_path / "run" / "metrics.jsonl").read_text()


def _empty_file(root: Path) -> str:
    (root / "empty.jsonl").write_text("")
    return str(root / "empty.jsonl")


BAD_INPUT = {  # the CLI's one line and exit 2 for the same errors: tests/test_robustness.py
    "lr_not_a_number": (lambda root: ("train.lr=nan",), "train.lr"),
    "negative_seed": (lambda root: ("seed=-1",), "seed"),
    "unknown_model_key": (lambda root: ("+model.anything=1",), "model.anything"),
    "unknown_method_knob": (lambda root: ("+method.k_percnt=5",), "method.k_percnt"),
    "unknown_task_key": (lambda root: ("+task.anything=1",), "task.anything"),
    "empty_data_file": (lambda root: ("task=gsm8k", "model=tiny-qwen2.5", f"task.train.path={_empty_file(root)}",
                                      f"task.eval.gsm8k_test.path={SHARED_DATA}/gsm8k/test.jsonl"),
                        "empty.jsonl"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_before_training_without_a_record(tmp_path, case):
    if "gsm8k" in case or case == "empty_data_file":
        if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists():
            absent(f"needs gsm8k/test.jsonl in the assets folder {SHARED_DATA}: set SLMBENCH_ASSETS to a folder "
                   f"holding it (README \"Assets\")")
    make_args, named = BAD_INPUT[case]
    method = "topk" if case == "unknown_method_knob" else "full"
    with pytest.raises(Exception) as raised:
        _run(tmp_path / "run", *make_args(tmp_path), method=method)
    assert input_error(raised.value) is not None and named in str(input_error(raised.value))
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_method_knob_out_of_range_is_refused_after_setup_started_without_a_record(tmp_path):
    """`method.n_layers` larger than the model is found when the model is known: the `running`
    record already written is taken back, so reports never count the refusal as a run."""
    with pytest.raises(Exception) as raised:
        _run(tmp_path / "run", "method.n_layers=9", method="lisa")
    assert isinstance(input_error(raised.value), ConfigError) and "method.n_layers" in str(raised.value)
    assert not (tmp_path / "run" / "result.json").exists()


# Secrets: values from environment variables never reach the records or W&B.

def test_values_from_the_environment_are_redacted_in_records_and_wandb(tmp_path, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("SLMBENCH_TEST_SECRET", secret)
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    record = _run(tmp_path / "run", "+api_key=${oc.env:SLMBENCH_TEST_SECRET}", "+copied=${api_key}",
                  "wandb.mode=offline", method="none")
    assert record["config"]["api_key"] == REDACTED and record["config"]["copied"] == REDACTED
    run_dir = tmp_path / "run"
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert secret.encode() not in path.read_bytes(), path
    # W&B's artifact staging lives in the run's W&B dir, not in the user's home
    assert list(run_dir.glob("wandb/offline-run-*/data/artifacts/staging/*"))
    assert "WANDB_DATA_DIR" not in os.environ


# Method knobs: the yaml is their only home.

@pytest.mark.parametrize("yaml_path", sorted(CONF.glob("method/*.yaml")), ids=lambda p: p.stem)
def test_method_constructors_take_every_yaml_knob_keyword_only_without_a_default(yaml_path):
    section = compose_config(f"method={yaml_path.stem}").method
    nodes = [("method", section)] + [(f"method.{k}", v) for k, v in section.items()
                                     if hasattr(v, "get") and hasattr(v, "keys") and v.get("_target_")]
    for where, node in nodes:
        cls = get_class(node["_target_"])
        params = {} if cls.__init__ is object.__init__ else dict(inspect.signature(cls.__init__).parameters)
        params.pop("self", None)
        knobs = [k for k in node if not str(k).startswith("_")]
        assert sorted(knobs) == sorted(params), f"{where}: yaml {sorted(knobs)} vs {cls.__name__} {sorted(params)}"
        for name, param in params.items():
            assert param.kind is inspect.Parameter.KEYWORD_ONLY, f"{cls.__name__}.{name} is not keyword-only"
            assert param.default is inspect.Parameter.empty, f"{cls.__name__}.{name} has a default; the yaml is its home"
