"""bench/run/resume.py: a run killed with SIGTERM and relaunched ends bit-identical to an unbroken run;
a finished sweep relaunched runs nothing new unless sweep.rerun=true."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.run.resume import run_key
from conftest import REPO, result_files, run_cli

RESUME_ARGS = ("train.max_steps=40", "eval.limit=40", "wandb.mode=disabled", "seed=3")


def _result(root: Path) -> dict:
    (path,) = list(result_files(root / "outputs" / "runs")) if (root / "outputs" / "runs").exists() else [None]
    return json.loads(path.read_text())


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_mid_training(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Start a real run, SIGTERM it once it has logged a few steps, and wait for it to exit."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = list((cwd / "outputs" / "runs").rglob("metrics.jsonl")) if (cwd / "outputs").exists() else []
        if logs and len(logs[0].read_text().splitlines()) >= 5:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


METHODS = ("full", "lora", "adagradselect")  # adagradselect: offload policy


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, cache_dir) -> dict[str, dict]:
    """Each method's unbroken run, the reference a killed and relaunched one must equal: one sweep
    (one process start for the three)."""
    root = tmp_path_factory.mktemp("unbroken")
    run_cli(root, "-m", f"method={','.join(METHODS)}", f"cache_dir={cache_dir}", *RESUME_ARGS)
    records = [json.loads(p.read_text()) for p in result_files(root / "outputs" / "multirun")]
    return {r["method"]: r for r in records}


@pytest.mark.parametrize("method", METHODS)
def test_sigterm_then_relaunch_equals_an_unbroken_run(tmp_path, cache_dir, method, unbroken):
    args = [f"method={method}", f"cache_dir={cache_dir}", *RESUME_ARGS]
    expected = unbroken[method]

    broken = tmp_path / "broken"
    broken.mkdir()
    killed = _kill_mid_training(broken, args)
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr[-2000:]
    preempted = _result(broken)
    assert preempted["status"] == "preempted" and 5 <= preempted["error"]["step"] < 40
    run_cli(broken, *args)  # the relaunch: same config, so same store key -> resume
    results = sorted(result_files(broken / "outputs" / "runs"))
    resumed = json.loads(results[-1].read_text())
    assert resumed["status"] == "ok" and resumed["resumed_from_step"] == preempted["error"]["step"]
    assert resumed["final_params_sha256"] == expected["final_params_sha256"]
    assert resumed["metrics"]["accuracy"] == expected["metrics"]["accuracy"]
    assert resumed["metrics"]["final_train_loss"] == expected["metrics"]["final_train_loss"]
    assert _losses(results[-1].parent) == _losses(Path(expected["run_dir"]))


def test_relaunching_a_finished_sweep_runs_nothing_new(tmp_path, cache_dir):
    sweep = ["-m", "method=none,full", "seed=0", f"cache_dir={cache_dir}", "train.max_steps=3", "eval.limit=8",
             "wandb.mode=disabled"]
    run_cli(tmp_path, *sweep, "hydra.sweep.dir=outputs/first")
    again = run_cli(tmp_path, *sweep, "hydra.sweep.dir=outputs/second")
    second = [json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "second")]
    assert len(second) == 2 and all(r["reused_from"].endswith(("-none-tiny-llama", "-full-tiny-llama")) for r in second)
    assert "already finished" in again.stderr + again.stdout
    for record in second:  # no step was trained: the reused dirs hold copies of the first sweep's logs
        assert not record.get("resumed_from_step")
        copied, original = Path(record["run_dir"]) / "metrics.jsonl", Path(record["reused_from"]) / "metrics.jsonl"
        assert copied != original and copied.read_text() == original.read_text()
    run_cli(tmp_path, *sweep, "hydra.sweep.dir=outputs/third", "sweep.rerun=true")
    third = [json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "third")]
    assert len(third) == 2 and not any("reused_from" in r for r in third)


def test_run_key_ignores_how_a_run_is_run_but_not_what_it_computes():
    base = {"seed": 0, "train": {"lr": 1e-3, "checkpoint_every": None}, "wandb": {"mode": "offline"}}
    same = {"seed": 0, "train": {"lr": 1e-3, "checkpoint_every": 50}, "wandb": {"mode": "disabled"}}
    other = {"seed": 1, "train": {"lr": 1e-3, "checkpoint_every": None}, "wandb": {"mode": "offline"}}
    assert run_key(base) == run_key(same) != run_key(other)
