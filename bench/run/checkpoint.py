"""Checkpoints for resume: atomic, verified, pruned; everything a bit-identical continuation needs.

A checkpoint is a directory `step-NNNNNNNN/` holding `state.pt` (trainable weights, optimizer,
LR schedule, method state, data position, RNG states) and `manifest.json` (step + sha256 of
state.pt), written under a temporary name and renamed into place, so a reader sees either a
whole checkpoint or none. A checkpoint whose bytes no longer match its manifest is reported and
skipped in favour of the previous one. `state.pt` holds tensors and plain data only and is read with
torch's weights_only unpickler: a file that asks for anything else is refused, never executed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.paths import file_sha256

log = logging.getLogger(__name__)
STATE_FILE, MANIFEST_FILE = "state.pt", "manifest.json"


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be loaded: refusing to start over silently."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (a full disk, most often); nothing of it is left behind."""


def _free_space(directory: Path) -> str:
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free on its disk"
    except OSError:
        return "free space unknown"


class UnsafeCheckpoint(CheckpointError):
    """A state.pt that holds more than tensors and plain data: never unpickled, never skipped."""


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays made Python numbers and lists: what torch's
    weights_only unpickler accepts besides tensors (dicts, lists, tuples, str, numbers, None)."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data, so the checkpoint loads with weights_only=True
    (numpy's legacy state is a tuple holding an array: its array becomes a list)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """The weights a run can change (all of them for full FT, the adapters for LoRA), by name."""
    wanted = {id(p) for p in params}
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if id(p) in wanted}


def params_digest(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> str:
    """sha256 of the trainable weights: equal digests = bit-identical runs (resume tests)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(model, params).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


def load_trainable_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    named = dict(model.named_parameters())
    missing = sorted(set(weights) - set(named))
    if missing:
        raise CheckpointError(f"checkpoint holds weights the model does not have: {missing[:5]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            named[name].copy_(tensor)


def load_state(path: Path) -> dict[str, Any]:
    """A state.pt with tensors and plain data only (torch's weights_only unpickler): one that asks
    for anything else (code to run) is refused naming the file, never executed (our choice: a store
    is shared, so a planted file must stop the relaunch rather than be skipped quietly)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpoint(f"{path} holds objects other than tensors and plain data; refusing to load it "
                               f"(it may run code). Delete it if you did not write it. ({str(err).splitlines()[0]})"
                               ) from None


class CheckpointDir:
    def __init__(self, directory: Path, keep: int):
        if keep < 1:
            raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
        self.directory, self.keep = Path(directory), keep

    def steps(self) -> list[Path]:
        return sorted(p for p in self.directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))

    def save(self, step: int, state: dict[str, Any]) -> Path:
        final = self.directory / f"step-{step:08d}"
        tmp = self.directory / f"step-{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:  # a failed write (full disk, a stop signal) leaves no half checkpoint behind
            tmp.mkdir(parents=True)
            # our file object, closed on any error: a deleted file's space is freed only once no one
            # holds it open (the failed record written next needs that space on a full disk)
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save(plain(state), f)
                f.flush()
                os.fsync(f.fileno())
            manifest = {"step": step, "sha256": file_sha256(tmp / STATE_FILE)}
            with open(tmp / MANIFEST_FILE, "w") as f:
                json.dump(manifest, f)
                f.flush()
                os.fsync(f.fileno())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(err, Exception):
                # torch's writer reports a full disk as a RuntimeError, then closing the file fails
                # too: one error naming the checkpoint and the cause, not a chain of tracebacks
                # torch's zip writer says a short write as "unexpected pos": the disk filled up
                full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "unexpected pos" in str(err)
                cause = "No space left on device: " if full else ""
                raise CheckpointWriteError(f"could not write the checkpoint {final}: {cause}{type(err).__name__}: "
                                           f"{str(err).strip().splitlines()[0]} ({_free_space(self.directory)})"
                                           ) from None
            raise
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved: %s", final)
        return final

    def load_latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that verifies; None when there is none at all."""
        candidates = self.steps()
        for path in reversed(candidates):
            try:
                manifest = json.loads((path / MANIFEST_FILE).read_text())
                if file_sha256(path / STATE_FILE) != manifest["sha256"]:
                    raise ValueError("sha256 of state.pt does not match manifest.json")
                state = load_state(path / STATE_FILE)
            except UnsafeCheckpoint:
                raise
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is skipped, loudly
                log.warning("checkpoint %s is corrupt or truncated (%s: %s); falling back to the previous one",
                            path, type(err).__name__, err)
                continue
            log.info("resuming from %s (step %d)", path, manifest["step"])
            return state
        if candidates:
            raise CheckpointError(
                f"every checkpoint in {self.directory} is corrupt; not starting over silently. "
                "Delete the directory or set train.resume=false to start from scratch.")
        return None
