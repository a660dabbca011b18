"""bench/run/checkpoint.py: atomic save, pruning, corrupt checkpoints skipped loudly, never a silent restart;
only tensors and plain data are ever unpickled; a failed write leaves nothing half-written."""
from __future__ import annotations

import errno
import logging
import os
import random

import numpy as np
import pytest
import torch

from bench.run.checkpoint import (CheckpointDir, CheckpointError, STATE_FILE, UnsafeCheckpoint, rng_state,
                                  set_rng_state)


def _state(step: int) -> dict:
    return {"step": step, "weights": {"w": torch.full((4,), float(step))}}


def test_save_prunes_to_the_last_n_and_loads_the_newest(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep=2)
    for step in (1, 2, 3):
        checkpoints.save(step, _state(step))
    assert [p.name for p in checkpoints.steps()] == ["step-00000002", "step-00000003"]
    assert checkpoints.load_latest()["step"] == 3
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog):
    checkpoints = CheckpointDir(tmp_path, keep=3)
    checkpoints.save(1, _state(1))
    newest = checkpoints.save(2, _state(2))
    data = (newest / STATE_FILE).read_bytes()
    (newest / STATE_FILE).write_bytes(data[: len(data) // 2])  # a write cut short
    with caplog.at_level(logging.WARNING):
        state = checkpoints.load_latest()
    assert state["step"] == 1 and torch.equal(state["weights"]["w"], torch.full((4,), 1.0))
    assert "step-00000002 is corrupt or truncated" in caplog.text


def test_a_flipped_byte_is_detected(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep=3)
    checkpoints.save(1, _state(1))
    newest = checkpoints.save(2, _state(2))
    data = bytearray((newest / STATE_FILE).read_bytes())
    data[-20] ^= 0xFF
    (newest / STATE_FILE).write_bytes(bytes(data))
    assert checkpoints.load_latest()["step"] == 1


def test_all_corrupt_refuses_to_start_over_silently(tmp_path):
    checkpoints = CheckpointDir(tmp_path, keep=3)
    only = checkpoints.save(1, _state(1))
    (only / STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="train.resume=false"):
        checkpoints.load_latest()


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert CheckpointDir(tmp_path / "none", keep=1).load_latest() is None


class _Planted:
    """Unpickling this runs a shell command: what a hostile state.pt in a shared store_dir does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_is_refused_naming_the_file_and_never_runs(tmp_path):
    checkpoints = CheckpointDir(tmp_path / "checkpoints", keep=2)
    planted = checkpoints.save(1, {"step": 1, "weights": {"w": torch.zeros(2)}, "x": _Planted(tmp_path / "marker")})
    assert (planted / STATE_FILE).exists() and not (tmp_path / "marker").exists()  # saved with a matching manifest
    with pytest.raises(UnsafeCheckpoint, match=str(planted / STATE_FILE)):
        checkpoints.load_latest()
    assert not (tmp_path / "marker").exists()


def test_rng_states_are_plain_data_that_load_with_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    checkpoints = CheckpointDir(tmp_path, keep=1)
    checkpoints.save(1, {"step": 1, "rng": rng_state(), "np_scalar": np.float64(0.5), "counts": np.arange(3)})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    state = checkpoints.load_latest()  # weights_only=True inside
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert state["np_scalar"] == 0.5 and state["counts"] == [0, 1, 2]


def test_a_failed_write_leaves_no_tmp_dir(tmp_path, monkeypatch):
    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    checkpoints = CheckpointDir(tmp_path, keep=2)
    monkeypatch.setattr("bench.run.checkpoint.torch.save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save(1, _state(1))
    assert list(tmp_path.iterdir()) == []
