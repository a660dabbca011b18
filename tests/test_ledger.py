"""Running apart from recording: a `Run` (bench/run/recipe.py) touches no disk of its own and knows
no run dir; the ledger (bench/run/ledger.py) is the one place that records, and it assembles
result.json in one place. The ledger's behaviour (records, resume, signals, refusals) is tested
through the entry in tests/test_reliability.py, test_robustness.py and test_resume.py."""
from __future__ import annotations

import ast
import inspect
import signal
from pathlib import Path

import pytest
import torch

import bench.run.recipe as recipe
from bench.run.ledger import RunLedger
from bench.run.recipe import Run
from conftest import REPO, compose_config

RECORDING = ("run_dir", "RunRecorder", "RunStore", "CheckpointDir", "write_json_atomic", "PreemptionSignals",
             "save_model", "open(")


def test_run_knows_no_run_dir_and_nothing_that_records():
    source = inspect.getsource(recipe)
    assert [name for name in RECORDING if name in source] == []
    assert "hasattr(" not in source  # no guards for clients that lack a part


def test_result_json_is_assembled_in_one_place():
    """Exactly one dict display with a "status" key in bench/run/: RunLedger.record."""
    where = []
    for path in sorted((REPO / "bench" / "run").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "status" for k in node.keys):
                where.append(f"{path.name}:{node.lineno}")
    assert len(where) == 1 and where[0].startswith("ledger.py:"), where


class SignalsUntouched:
    """A loop observer that notes, at every step, whether SIGTERM still has Python's own handler."""

    def __init__(self):
        self.default = []

    def step_start(self, step: int) -> None:
        self.default.append(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)

    def step_end(self, step: int, metrics: dict) -> None:
        pass


def test_a_run_without_a_ledger_writes_nothing_and_keeps_the_signals(tmp_path, cache_dir):
    """Built, trained (checkpointing and resume on: the ledger's knobs), evaluated and measured in an
    empty working dir: the dir stays empty (the base model comes from the cache outside it), the
    run has no run dir, and SIGTERM keeps Python's own handler throughout."""
    assert Path.cwd() == tmp_path and not any(tmp_path.iterdir())
    cfg = compose_config("train.max_steps=3", "train.batch_size=8", "train.warmup_steps=0", "eval.limit=4",
                         "train.checkpoint_every=1", "train.resume=true", "train.save_model=true",
                         "wandb.mode=offline", "device=cpu", f"cache_dir={cache_dir}")
    run = Run.build(cfg)
    observer = SignalsUntouched()
    run.train(observers=[observer])
    run.evaluate()
    metrics = run.metrics()
    assert [h["step"] for h in run.history] == [1, 2, 3] and metrics["train_steps"] == 3
    assert metrics["peak_host_rss_gib"] > 0 and 0 <= metrics["accuracy"] <= 1
    assert observer.default == [True, True, True]
    assert not hasattr(run, "run_dir")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == []


def test_training_memory_is_released_before_evaluation(tmp_path, cache_dir):
    """The ledger's train step ends by letting go of what only training holds (the optimizer's
    moments, and on CUDA the replayed decoder's graphs): the evaluation that follows answers exactly
    as a run that kept them, and the released run refuses to train or checkpoint again."""
    cfg = compose_config("method=full", "train.max_steps=3", "train.batch_size=8", "train.warmup_steps=0",
                         "eval.limit=4", "wandb.mode=disabled", "device=cpu", f"cache_dir={cache_dir}",
                         f"store_dir={tmp_path / 'store'}")
    ledger = RunLedger(cfg, tmp_path / "run", {"method": "full", "model": cfg.model.name, "task": cfg.task.name})
    with ledger.signals:
        ledger.build()
        ledger.train()
    released = ledger.run
    kept = Run.build(cfg)
    kept.train()
    assert len(kept.state.optimizer.state) == len(kept.params)  # what a trained run holds: Adam's moments
    assert released.training_released and released.step == kept.step == 3 and not released.state.optimizer.state
    assert all(torch.equal(a, b) for a, b in zip(released.params, kept.params))  # the same training
    assert released.evaluate() == kept.evaluate() and released.samples == kept.samples
    with pytest.raises(RuntimeError, match="release_training_memory"):
        released.train()
    with pytest.raises(RuntimeError, match="release_training_memory"):
        released.state_dict()
    ledger.store.release()
