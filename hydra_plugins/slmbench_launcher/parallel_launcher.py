"""`hydra/launcher=parallel`: the jobs of a sweep run in parallel on one host, one process each.

Each job is a fresh `python -m bench.cli` process (clean CUDA peaks, its own W&B run) pinned to
one GPU through CUDA_VISIBLE_DEVICES; with no GPU, `n_parallel` CPU processes run side by side.
Hydra's own launchers leave GPU assignment to the user (hydra#1331, #2757), hence this one.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.slmbench_launcher.parallel_launcher.ParallelLauncher"
    # GPUs to use, one job per GPU at a time: "auto" = every visible GPU; or a list like [0, 1].
    gpus: Any = "auto"
    # Jobs at once when no GPU is used (CPU); ignored when GPUs are found.
    n_parallel: int = 2
    # How a job is started: the harness's own entry point.
    command: List[str] = field(default_factory=lambda: ["{python}", "-m", "bench.cli"])
    poll_interval_s: float = 0.5


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf,
                             provider="slmbench")


def _visible_gpus(gpus: Any) -> List[str]:
    if gpus == "auto":
        import torch  # the parent only counts devices; it never creates a CUDA context

        return [str(i) for i in range(torch.cuda.device_count())]
    return [str(g) for g in (gpus or [])]


class ParallelLauncher(Launcher):
    def __init__(self, gpus: Any = "auto", n_parallel: int = 2, command: Sequence[str] = (),
                 poll_interval_s: float = 0.5) -> None:
        self.gpus, self.n_parallel, self.command, self.poll_interval_s = gpus, n_parallel, list(command), poll_interval_s
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = _visible_gpus(self.gpus)
        slots: List[Optional[str]] = gpus or [None] * max(1, self.n_parallel)
        self._n_slots = len(slots)
        log.info("Launching %d jobs, %d at a time (%s)", len(job_overrides), len(slots),
                 f"GPUs {', '.join(gpus)}" if gpus else "CPU")
        pending = deque((initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides))
        running: Dict[int, tuple] = {}  # job index -> (slot, process, JobReturn, log file)
        free = deque(slots)
        returns: Dict[int, JobReturn] = {}

        def forward(signum, frame):
            # A preempted launcher passes the signal on: each job checkpoints and exits; no new job starts.
            log.warning("received %s: forwarding it to %d running jobs", signal.Signals(signum).name, len(running))
            pending.clear()
            for _, proc, _, _ in running.values():
                proc.send_signal(signum)

        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGUSR1)}
        try:
            self._run_all(pending, running, free, returns)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for _, proc, _, _ in running.values():  # never leave orphans behind
                proc.terminate()
        return [returns[i] for i in sorted(returns)]

    def _run_all(self, pending: deque, running: Dict[int, tuple], free: deque, returns: Dict[int, JobReturn]) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        while pending or running:
            while pending and free:
                slot = free.popleft()
                idx, overrides = pending.popleft()
                running[idx] = (slot, *self._start(idx, overrides, slot, sweep_dir))
            time.sleep(self.poll_interval_s)
            for idx, (slot, proc, ret, logfile) in list(running.items()):
                if proc.poll() is None:
                    continue
                logfile.close()
                # A job that wrote its result.json (ok, failed, oom, preempted) is a row of the
                # table, as an in-process job is; one that died without a record fails the sweep.
                recorded = (Path(ret.working_dir) / "result.json").exists()
                ret.status = JobStatus.COMPLETED if recorded else JobStatus.FAILED
                ret.return_value = proc.returncode if recorded else RuntimeError(
                    f"job {idx} exited with {proc.returncode} and no result.json; see {ret.working_dir}/launcher.log")
                log.info("#%d finished (exit %d)%s", idx, proc.returncode, f" on GPU {slot}" if slot else "")
                returns[idx] = ret
                del running[idx]
                free.append(slot)

    def _start(self, idx: int, overrides: List[str], slot: Optional[str], sweep_dir: Path) -> Tuple:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        job_dir = sweep_dir / str(sweep_config.hydra.sweep.subdir)
        job_dir.mkdir(parents=True, exist_ok=True)
        extra = [f"hydra.run.dir={job_dir}"]
        if not any(o.startswith("wandb.group=") for o in overrides):
            extra.append(f"wandb.group={sweep_dir.name}")  # the sweep's W&B group, as in-process jobs get
        command = [part.format(python=sys.executable) for part in self.command] + overrides + extra
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        # Each job gets its share of the cores: N processes each starting one thread per core
        # oversubscribe the host (seen: a 32-core H200 host, 3 s per tiny CPU step instead of 20 ms).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self._n_slots)))
        logfile = open(job_dir / "launcher.log", "w")
        log.info("#%d : %s%s", idx, " ".join(filter_overrides(overrides)), f" (GPU {slot})" if slot else "")
        proc = subprocess.Popen(command, env=env, stdout=logfile, stderr=subprocess.STDOUT)
        ret = JobReturn(overrides=overrides, cfg=sweep_config, hydra_cfg=sweep_config, working_dir=str(job_dir),
                        task_name=sweep_config.hydra.job.name)
        return proc, ret, logfile
