"""Surviving sweeps: a run's identity and preemption signals (its store: bench/run/store.py).

A run is identified by a hash of its resolved config, minus the keys that only say *how* it is
run (logging, checkpoint cadence, where caches live), plus the sha256 of every local data file
it reads (a file edited in place is a different run). `store_dir/<key>/` holds that identity's
checkpoints and, once it finished, a copy of its result.json: relaunching the same run resumes from
there, and relaunching a finished one is skipped unless `sweep.rerun=true`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import signal
import subprocess
import threading
from typing import Any

from bench.paths import file_sha256
from bench.tasks.sources import existing_file

log = logging.getLogger(__name__)
# Keys that do not change what a run computes.
NOT_IDENTITY = ("wandb", "sweep", "cache_dir", "store_dir")
NOT_IDENTITY_TRAIN = ("checkpoint_every", "keep_checkpoints", "resume")
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what schedulers send before they kill
# Ctrl-C checkpoints like a preemption but is recorded as the user's doing.
STOP_SIGNALS = (*PREEMPTION_SIGNALS, signal.SIGINT)


def identity_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that says what a run computes (a copy: the keys that only
    say how it is run removed). slmbench-report pools runs whose identity differs only in `seed`."""
    identity = copy.deepcopy({k: v for k, v in config.items() if k not in NOT_IDENTITY})
    for key in NOT_IDENTITY_TRAIN:
        identity.get("train", {}).pop(key, None)
    return identity


def run_key(config: dict[str, Any], data_files: dict[str, str] | None = None) -> str:
    """The run's identity: its config (what it computes) and its data files' contents, in the
    config's order (`data_file_hashes`); the paths themselves are in the config already."""
    identity = identity_config(config)
    if data_files:
        identity["data_sha256"] = list(data_files.values())
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def data_file_paths(task: dict[str, Any]) -> dict[str, Any]:
    """config key -> local path, for every source of the task that reads a file (hub sources
    have none): `task.train.path`, then `task.eval.<set>.path` in the config's order."""
    sources = {"task.train": task.get("train")}
    sources.update({f"task.eval.{name}": source for name, source in (task.get("eval") or {}).items()})
    return {f"{key}.path": source["path"] for key, source in sources.items()
            if isinstance(source, dict) and source.get("path")}


def data_file_hashes(task: dict[str, Any]) -> dict[str, str]:
    """{resolved path: sha256} of the task's local data files (recorded as result.json's
    `data_files`); a missing file or a directory is named with its config key."""
    hashes: dict[str, str] = {}
    for key, path in data_file_paths(task).items():
        resolved = existing_file(path, key)
        hashes[str(resolved)] = file_sha256(resolved)
    return hashes


class Preempted(BaseException):
    """A stop signal. Like KeyboardInterrupt, not an Exception: a library's `except Exception`
    (in evaluation, say) cannot swallow it."""

    def __init__(self, signum: int, step: int | None, phase: str = "train"):
        where = f"at step {step}; checkpoint saved" if phase == "train" else f"during {phase}"
        super().__init__(f"received {signal.Signals(signum).name} {where}")
        self.signum, self.step, self.phase = signum, step, phase

    @property
    def status(self) -> str:
        """The record's status: `interrupted` (Ctrl-C, exit 130) or `preempted` (exit 143 on SIGTERM)."""
        return "interrupted" if self.signum == signal.SIGINT else "preempted"


class Diverged(RuntimeError):
    """A non-finite loss or gradient norm: the run stops at that step (status failed, reason diverged)."""

    def __init__(self, step: int, values: dict[str, float | None]):
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if v is not None and not math.isfinite(v))
        super().__init__(f"training diverged at step {step}: {bad}; lower train.lr")
        self.step = step


class PreemptionSignals:
    """While active, SIGTERM/SIGUSR1/SIGINT stop the run at any phase, with a record.

    Inside training steps (`deferred`) a signal only sets a flag: the loop checkpoints at the end of
    the step and raises `Preempted` there. Anywhere else (setup, evaluation, saving) the handler
    raises `Preempted` at once, so a scheduler's grace period is never spent evaluating. While the
    run records its failure (`deferred` again) a signal waits until the record is written.

    The previous handlers (e.g. submitit's requeue on SIGUSR1) are restored on exit, and
    `redeliver` hands them the signal once the record is safely on disk. A second Ctrl-C
    does not wait for the step to end (our choice: a user who presses it twice means now).
    Entering it again while active is a no-op. The ledger (bench/run/ledger.py) owns them: a run
    without one keeps Python's own handling.
    """

    def __init__(self):
        self.received: int | None = None
        self.deferred = False
        self.phase = "setup"
        self._previous: dict[int, Any] = {}
        self._depth = 0

    def __enter__(self) -> "PreemptionSignals":
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is not None:  # already stopping: the first signal decides
            return
        self.received = signum
        if self.deferred:
            log.warning("received %s: stopping at the end of this step", signal.Signals(signum).name)
            return
        log.warning("received %s during %s: stopping now", signal.Signals(signum).name, self.phase)
        raise Preempted(signum, None, self.phase)

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}

    def redeliver(self, signum: int) -> None:
        """Give the signal to whoever handled it before us; exit like an unhandled SIGTERM otherwise."""
        previous = self._previous.get(signum)
        # Python's own SIGINT handler would raise KeyboardInterrupt: exit 130 like a shell instead.
        if callable(previous) and previous is not signal.default_int_handler:
            try:
                previous(signum, None)
            except subprocess.CalledProcessError as err:
                if err.returncode >= 0:
                    raise
                # Killed by a signal: submitit's handler runs `scontrol requeue`, and a requeue that takes
                # effect signals every process of the job, that command too if it has not exited yet (seen
                # on a local SLURM: "died with SIGTERM", the job requeued all the same). Raised on, the
                # error ended the job as a run that finished, so its sweep ended while the requeued run
                # trained. Exit as a requeued job exits (submitit: sys.exit), with no result: the launcher
                # then waits for the next start, or reports the job if the requeue did not happen.
                log.warning("handing %s on: %s; exiting as a requeued job", signal.Signals(signum).name, err)
                raise SystemExit(128 + signum) from err
        raise SystemExit(128 + signum)
