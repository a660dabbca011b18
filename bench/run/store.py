"""A run's store, `store_dir/<run key>/`: its checkpoints, its finished record, and a lock.

One run identity has one store, so two processes of the same run would overwrite each other's
checkpoints (or one would resume from a checkpoint the other is still writing). The lock is an
exclusive `flock` on `lock`, held for the whole run and released by the kernel when the process
dies, however it dies (a SIGKILLed holder never blocks the relaunch); `holder.json` names the
holder, so the refusal can say which process on which host has it.

A finished run leaves result.json, metrics.jsonl and samples.jsonl here: a relaunch that skips
it copies all three into its own run dir, which is then complete even if the original is deleted.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.records.recorder import write_json_atomic
from bench.records.schema import METRICS_FILE, RESULT_FILE, SAMPLES_FILE

log = logging.getLogger(__name__)
LOCK_FILE, HOLDER_FILE = "lock", "holder.json"


class StoreBusy(ConfigError):
    """The same run (same key) is running in another process: refused at start, in one line."""


def this_process() -> dict[str, Any]:
    """Who runs: what a `running` record and the lock's holder file name."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


class RunStore:
    def __init__(self, store_dir: str | Path, key: str):
        self.store_dir, self.key = Path(store_dir), key
        self.root = self.store_dir / key
        self.checkpoints = self.root / "checkpoints"
        self.result = self.root / RESULT_FILE
        self._lock_fd: int | None = None

    def acquire(self) -> "RunStore":
        """Take the lock, or refuse naming its holder. Also the start-time check that store_dir is
        writable: an unwritable store would otherwise be found only when the finished run saves."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"store_dir={str(self.store_dir)!r} is not writable: cannot create {self.root} "
                              f"({err.strerror}); set store_dir to a writable directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusy(f"{self.root} is in use: the same run is already running ({self.holder()}); "
                            "wait for it to finish, or stop it") from None
        self._lock_fd = fd
        try:
            write_json_atomic(self.root / HOLDER_FILE, {**this_process(), "since": time.time()})
        except OSError as err:
            self.release()
            raise ConfigError(f"store_dir={str(self.store_dir)!r} is not writable: {err}") from None
        return self

    def holder(self) -> str:
        try:
            holder = json.loads((self.root / HOLDER_FILE).read_text())
        except (OSError, ValueError):
            return "holder unknown"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        return f"pid {holder.get('pid')} on host {holder.get('host')}, since {since}"

    def release(self) -> None:
        if self._lock_fd is not None:
            (self.root / HOLDER_FILE).unlink(missing_ok=True)
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunStore":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def finished_record(self) -> dict[str, Any] | None:
        """The finished (ok) record of this identity, or None."""
        if not self.result.exists():
            return None
        try:
            record = json.loads(self.result.read_text())
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (OSError, ValueError) as err:  # a corrupt record must not block its identity forever
            log.warning("%s is unreadable (%s); treating the run as not finished: it runs again", self.result, err)
            return None
        return record if record.get("status") == "ok" else None

    def save_finished(self, record: dict[str, Any], run_dir: Path) -> None:
        """Keep the finished run's record files (what skip-finished serves) and drop its checkpoints."""
        for name in (METRICS_FILE, SAMPLES_FILE):
            if (Path(run_dir) / name).exists():
                shutil.copyfile(Path(run_dir) / name, self.root / name)
        write_json_atomic(self.result, record)  # last: a record in the store means its files are there
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def reuse_into(self, run_dir: Path) -> dict[str, Any]:
        """Copy the finished run's record files into `run_dir`; returns its record there."""
        record = self.finished_record()
        if record is None:
            raise FileNotFoundError(f"{self.result}: no finished record to reuse")
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS_FILE, SAMPLES_FILE):
            if (self.root / name).exists():
                shutil.copyfile(self.root / name, run_dir / name)
        reused = {**record, "reused_from": record["run_dir"], "run_dir": str(run_dir)}
        write_json_atomic(run_dir / RESULT_FILE, reused)
        return reused
