"""Surviving sweeps: a run's identity, its finished record, and preemption signals.

A run is identified by a hash of its resolved config, minus the keys that only say *how* it is
run (logging, checkpoint cadence, where caches live). `store_dir/<key>/` holds that identity's
checkpoints and, once it finished, a copy of its result.json: relaunching the same run resumes from
there, and relaunching a finished one is skipped unless `sweep.rerun=true`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# Keys that do not change what a run computes.
NOT_IDENTITY = ("wandb", "sweep", "cache_dir", "store_dir")
NOT_IDENTITY_TRAIN = ("checkpoint_every", "keep_checkpoints", "resume")
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what schedulers send before they kill


def run_key(config: dict[str, Any]) -> str:
    identity = copy.deepcopy({k: v for k, v in config.items() if k not in NOT_IDENTITY})
    for key in NOT_IDENTITY_TRAIN:
        identity.get("train", {}).pop(key, None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def finished_record(store: Path) -> dict[str, Any] | None:
    path = store / "result.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") == "ok" else None


class Preempted(Exception):
    def __init__(self, signum: int, step: int):
        super().__init__(f"received {signal.Signals(signum).name} at step {step}; checkpoint saved")
        self.signum, self.step = signum, step


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR1 only set a flag; the loop checkpoints at the end of the step.

    The previous handlers (e.g. submitit's requeue on SIGUSR1) are restored on exit, and
    `redeliver` hands them the signal once the checkpoint is safely on disk.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("received %s: checkpointing at the end of this step", signal.Signals(signum).name)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def redeliver(self, signum: int) -> None:
        """Give the signal to whoever handled it before us; exit like an unhandled SIGTERM otherwise."""
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, None)
        raise SystemExit(128 + signum)
