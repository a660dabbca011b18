"""NVIDIA MPS for a packed sweep (`hydra.launcher.mps=true`): the launcher's own MPS control daemon,
with the sweep's jobs as its clients.

Why. Without MPS, the processes of the jobs packed on one GPU take turns on it (time slicing): only
one process's kernels run at a time, however few of the card's multiprocessors they fill. A small
model's kernels fill few (a 135M model's decode step, a selection method's per-block work), so
packing then hides the host's work (process starts, Python between kernels) but not the GPU's. An
MPS server runs the kernels of all its clients side by side on one shared context
(nvidia-cuda-mps-control(1): "The MPS server creates the shared GPU context, manages its clients,
and issues work to the GPU on behalf of its clients").

How. The daemon is the sweep's own: its pipe directory is a fresh temp dir (a Unix socket's path is
short, so not under the sweep dir), its logs go to `<sweep dir>/.mps`, and only processes given
its `CUDA_MPS_PIPE_DIRECTORY` (the sweep's jobs) connect to it. The card's compute mode and every
other setting stay as they are. The server is started at once (`start_server -uid`) and must be
listed (`get_server_list`), since a CUDA program that cannot reach a daemon runs without MPS
without a word (the same man page): no silent fallback here. The launcher quits the daemon when
its packed jobs are done (before the solo timing stage: solo runs time the card as users have it)
and when the sweep stops.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"  # ships with the NVIDIA driver, beside nvidia-smi


class MpsDaemon:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.pipe_dir: Path | None = None
        self.server_pids: list[str] = []

    @property
    def running(self) -> bool:
        return self.pipe_dir is not None

    def client_env(self) -> dict[str, str]:
        """What a job needs to be this daemon's client (nothing once it has quit)."""
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir)} if self.running else {}

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir),
                "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir)}

    def _send(self, command: str) -> str:
        """One command to the running daemon (its front end reads commands from stdin)."""
        proc = subprocess.run([CONTROL], input=command + "\n", env=self._env(), capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"`{command}` to {CONTROL} exited {proc.returncode}: "
                               f"{(proc.stdout + proc.stderr).strip() or 'no output'}")
        return proc.stdout.strip()

    def _log_tail(self) -> str:
        lines = []
        for name in ("control.log", "server.log"):
            path = self.log_dir / name
            if path.exists():
                lines += [f"{path}:", *path.read_text(errors="replace").splitlines()[-5:]]
        return "\n".join(lines) or f"(no log in {self.log_dir})"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pipe_dir = Path(tempfile.mkdtemp(prefix="slmbench-mps-"))
        fix = "set hydra.launcher.mps=false to let the packed jobs time-share their GPU"
        try:
            started = subprocess.run([CONTROL, "-d"], env=self._env(), capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            self._remove_pipe_dir()
            raise RuntimeError(f"hydra.launcher.mps=true: {CONTROL} is not on PATH (it comes with the NVIDIA "
                               f"driver); {fix}") from None
        try:
            if started.returncode != 0:
                raise RuntimeError(f"{CONTROL} -d exited {started.returncode}: "
                                   f"{(started.stdout + started.stderr).strip() or 'no output'}")
            self._send(f"start_server -uid {os.getuid()}")
            self.server_pids = self._send("get_server_list").split()
            if not self.server_pids:
                raise RuntimeError("the daemon started, but no MPS server runs for this user")
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            self.stop()
            raise RuntimeError(f"hydra.launcher.mps=true: {err}\n{self._log_tail()}\n{fix}") from None
        log.info("MPS: the packed jobs are clients of this sweep's MPS server (pid %s; logs in %s)",
                 ", ".join(self.server_pids), self.log_dir)

    def stop(self) -> None:
        """Quit the daemon and its server (the jobs have ended); idempotent."""
        if not self.running:
            return
        try:
            self._send("quit")
        except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError) as err:
            log.warning("MPS: quitting the daemon failed (%s); see %s", err, self.log_dir)
        self._remove_pipe_dir()

    def _remove_pipe_dir(self) -> None:
        shutil.rmtree(self.pipe_dir, ignore_errors=True)
        self.pipe_dir = None
