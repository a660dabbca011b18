"""bench/run/checkpoint.py: atomic save, pruning, corrupt checkpoints skipped loudly, never a silent restart."""
from __future__ import annotations

import logging

import pytest
import torch

from bench.run.checkpoint import CheckpointDir, CheckpointError, STATE_FILE


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
