"""`hydra/launcher=parallel`: the jobs of a sweep run in parallel on one host, one process each.

Each job is a fresh `python -m bench.cli` process (clean CUDA peaks, its own W&B run) pinned to
one GPU through CUDA_VISIBLE_DEVICES (the card's UUID where nvidia-smi names it); with no GPU,
`n_parallel` CPU processes run side by side. Hydra's own launchers leave GPU assignment to the user
(hydra#1331, #2757), hence this one.

`jobs_per_gpu` > 1 packs a card: a small model's job leaves most of an 80 GiB card idle (launch-
bound steps, 1.5-20 GiB peaks), so several run at once, each admitted when the card has room for
its expected peak (admission.py). Every job is told how many jobs shared its card at most while it
ran (`device_share`, written here, read into its record), since time measured on a shared card is
not the method's own: `solo_timing=true` reruns one job per method alone on the card afterwards
(`timing=solo`, a run identity of its own) for the time and memory figures. `mps=true` runs the
packed jobs as clients of the sweep's own NVIDIA MPS server, so that their kernels run side by
side rather than in turns (mps.py).
"""

import json
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

from bench.records.schema import DEVICE_SHARE_ENV  # the file a job reads its `device_share` from
from hydra_plugins.slmbench_launcher.admission import Card, known_peaks_gib, memory_probe, pick
from hydra_plugins.slmbench_launcher.mps import MpsDaemon

log = logging.getLogger(__name__)


@dataclass
class ParallelLauncherConf:
    _target_: str = "hydra_plugins.slmbench_launcher.parallel_launcher.ParallelLauncher"
    # GPUs to use: "auto" = every visible GPU; or a list like [0, 1].
    gpus: Any = "auto"
    # Jobs at once on each GPU (each its own process), admitted by the card's free memory.
    jobs_per_gpu: int = 1
    # Jobs at once when no GPU is used (CPU); ignored when GPUs are found.
    n_parallel: int = 2
    # A job's expected peak when the store holds no finished run of its method/model/task (GiB). Our
    # choice, from the SmolLM2-135M GSM8K protocol on an H100 (docs/results): LoRA-256's process held
    # 19 GiB, full fine-tuning's 13.5; at 8 GiB six first jobs on one 80 GiB card ran out of memory.
    expected_job_gib: float = 20.0
    # Added to every expected peak: the CUDA context and the allocator's slack (GiB).
    memory_margin_gib: float = 2.0
    # Other stores whose finished runs give expected peaks, read beside this sweep's store_dir (a
    # pilot sweep's, or the same sweep's serial run): the largest peak of a method/model/task wins.
    peaks_from: List[str] = field(default_factory=list)
    # Where a card's memory is read: nvidia-smi | budget:<GiB> (a card of that size used only by the sweep).
    gpu_memory: str = "nvidia-smi"
    # After the sweep: one job per method again, alone on its card (timing=solo), for time and memory.
    solo_timing: bool = False
    # GPU jobs as clients of the sweep's own NVIDIA MPS server: packed jobs' kernels run side by side
    # instead of taking turns on the card (mps.py). Off: the driver's time slicing.
    mps: bool = False
    # Seconds between the sweep's progress lines (also printed whenever a job ends).
    progress_every_s: float = 30.0
    # How a job is started: the harness's own entry point.
    command: List[str] = field(default_factory=lambda: ["{python}", "-m", "bench.cli"])
    poll_interval_s: float = 0.5


ConfigStore.instance().store(group="hydra/launcher", name="parallel", node=ParallelLauncherConf,
                             provider="slmbench")


def _visible_gpus(gpus: Any) -> List[str]:
    if gpus == "auto":
        import torch  # the parent only counts devices (NVML); it never creates a CUDA context

        return [str(i) for i in range(torch.cuda.device_count())]
    return [str(g) for g in (gpus or [])]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _method_choice(overrides: Sequence[str]) -> Optional[str]:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), None)


class Progress:
    """The sweep's progress line: runs done/total, running, failed, ETA (elapsed per finished run
    times the runs left: the sweep's own pace, concurrency included)."""

    def __init__(self, total: int):
        self.total, self.done, self.failed, self.start = total, 0, 0, time.monotonic()

    def line(self, running: int) -> str:
        elapsed = time.monotonic() - self.start
        eta = _duration(elapsed / self.done * (self.total - self.done)) if self.done else "?"
        return (f"sweep: {self.done}/{self.total} done, {running} running, {self.failed} failed, "
                f"elapsed {_duration(elapsed)}, ETA {eta}")


@dataclass
class Job:
    idx: int
    overrides: List[str]
    expected_gib: float
    card: Optional[Card] = None
    proc: Any = None
    ret: Optional[JobReturn] = None
    logfile: Any = None
    share_file: Optional[Path] = None
    jobs_on_device_max: int = 1


class ParallelLauncher(Launcher):
    def __init__(self, gpus: Any = "auto", jobs_per_gpu: int = 1, n_parallel: int = 2, expected_job_gib: float = 20.0,
                 memory_margin_gib: float = 2.0, peaks_from: Sequence[str] = (), gpu_memory: str = "nvidia-smi",
                 solo_timing: bool = False, mps: bool = False, progress_every_s: float = 30.0,
                 command: Sequence[str] = (), poll_interval_s: float = 0.5) -> None:
        if jobs_per_gpu < 1 or n_parallel < 1:
            raise ValueError(f"hydra.launcher.jobs_per_gpu and n_parallel must be >= 1 "
                             f"(got {jobs_per_gpu}, {n_parallel})")
        self.gpus, self.jobs_per_gpu, self.n_parallel = gpus, jobs_per_gpu, n_parallel
        self.expected_job_gib, self.memory_margin_gib = expected_job_gib, memory_margin_gib
        self.peaks_from = [Path(str(d)) for d in peaks_from or ()]
        if missing := [str(d) for d in self.peaks_from if not d.is_dir()]:
            raise ValueError(f"hydra.launcher.peaks_from: {missing} not a directory; give stores "
                             "(a sweep's store_dir) whose finished runs' peaks this sweep's jobs may expect")
        self.probe, self.gpu_memory_spec = memory_probe(gpu_memory), gpu_memory
        self.solo_timing, self.mps, self.progress_every_s = solo_timing, mps, progress_every_s
        self.mps_daemon: Optional[MpsDaemon] = None
        self.command, self.poll_interval_s = list(command), poll_interval_s
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.stopped = False  # a stop signal came: no new job, no solo stage
        self.jobs: Dict[int, Job] = {}  # every job started, by index

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        gpus = _visible_gpus(self.gpus)
        # No GPU: the host is one "card" of n_parallel jobs (the same bookkeeping, no memory check).
        self.cards = self.probe.cards(gpus) if gpus else [Card("cpu", "", None)]
        self.per_card = self.jobs_per_gpu if gpus else self.n_parallel
        self.on_gpu = bool(gpus)
        if self.mps and not self.on_gpu:
            raise ValueError("hydra.launcher.mps=true needs GPUs, and this sweep runs on the CPU "
                             "(no GPU found, or hydra.launcher.gpus is empty); set hydra.launcher.mps=false")
        self._n_slots = len(self.cards) * self.per_card
        self.peaks = self._known_peaks() if gpus else {}
        log.info("Launching %d jobs, %d at a time (%s)", len(job_overrides), self._n_slots,
                 f"GPUs {', '.join(gpus)}, up to {self.per_card} per GPU" if gpus else "CPU")
        self.pending = deque(Job(initial_job_idx + i, list(o), 0.0) for i, o in enumerate(job_overrides))
        running: Dict[int, Job] = {}
        returns: Dict[int, JobReturn] = {}

        def forward(signum, frame):
            # A preempted launcher passes the signal on: each job checkpoints and exits; no new job starts.
            log.warning("received %s: forwarding it to %d running jobs", signal.Signals(signum).name, len(running))
            self.pending.clear()
            self.stopped = True
            for job in running.values():
                job.proc.send_signal(signum)

        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGUSR1)}
        try:
            if self.mps:
                self.mps_daemon = MpsDaemon(self.sweep_dir / ".mps")
                self.mps_daemon.start()
            self._run_all(running, returns)
            if self.mps_daemon:  # the solo stage times the card without MPS, as users have it
                self.mps_daemon.stop()
            if self.solo_timing and not self.stopped:
                self.pending = deque(self._solo_jobs(job_overrides, initial_job_idx + len(job_overrides)))
                log.info("Solo timing stage: %d jobs, one per card at a time (timing=solo)", len(self.pending))
                self.per_card = 1
                if self.on_gpu:  # the packed jobs' peaks are known now
                    self.peaks = self._known_peaks()
                self._run_all(running, returns)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for job in running.values():  # never leave orphans behind
                job.proc.terminate()
            if self.mps_daemon:  # its clients end first
                for job in running.values():
                    try:
                        job.proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        job.proc.kill()
                self.mps_daemon.stop()
        return [returns[i] for i in sorted(returns)]

    def _solo_jobs(self, job_overrides: Sequence[Sequence[str]], first_idx: int) -> List[Job]:
        """The first job of each method (in sweep order), again, as its own identity (timing=solo)."""
        firsts: Dict[Optional[str], List[str]] = {}
        for overrides in job_overrides:
            firsts.setdefault(_method_choice(overrides), list(overrides))
        return [Job(first_idx + i, [*o, "timing=solo"], 0.0) for i, o in enumerate(firsts.values())]

    def _known_peaks(self) -> Dict[tuple, float]:
        return known_peaks_gib(Path(str(self.config.store_dir)), *self.peaks_from)

    def _expected_gib(self, cfg: DictConfig, overrides: List[str]) -> float:
        method = _method_choice(overrides) or str(cfg.hydra.runtime.choices.get("method"))
        key = (method, str(cfg.model.name), str(cfg.task.name))
        return self.peaks.get(key, self.expected_job_gib) + self.memory_margin_gib

    def _run_all(self, running: Dict[int, Job], returns: Dict[int, JobReturn]) -> None:
        pending = self.pending
        progress = Progress(len(pending))
        last_line = time.monotonic()
        for job in pending:  # the sweep config (and so the expected peak) of every job, once
            job.ret = self._job_return(job)
            job.expected_gib = self._expected_gib(job.ret.cfg, job.overrides)
        while pending or running:
            while (chosen := pick([(j.idx, j.expected_gib) for j in pending], self.cards, self._probe(),
                                  self.per_card)) is not None:
                position, card = chosen
                job = pending[position]
                del pending[position]
                self._start(job, card)
                running[job.idx] = job
            time.sleep(self.poll_interval_s)
            for idx, job in list(running.items()):
                if job.proc.poll() is None:
                    continue
                job.logfile.close()
                # A job that wrote its result.json (ok, failed, oom, preempted) is a row of the
                # table, as an in-process job is; one that died without a record fails the sweep.
                result = Path(job.ret.working_dir) / "result.json"
                status = json.loads(result.read_text()).get("status") if result.exists() else None
                job.ret.status = JobStatus.COMPLETED if status is not None else JobStatus.FAILED
                job.ret.return_value = job.proc.returncode if status is not None else RuntimeError(
                    f"job {idx} exited with {job.proc.returncode} and no result.json; "
                    f"see {job.ret.working_dir}/launcher.log")
                log.info("#%d finished (exit %d, %s)%s", idx, job.proc.returncode, status or "no record",
                         f" on GPU {job.card.index}" if self.on_gpu else "")
                returns[idx] = job.ret
                del running[idx]
                del job.card.jobs[idx]
                progress.done += 1
                progress.failed += status != "ok"
                log.info(progress.line(len(running)))
                last_line = time.monotonic()
            if running and time.monotonic() - last_line >= self.progress_every_s:
                log.info(progress.line(len(running)))
                last_line = time.monotonic()

    def _mps_serves(self) -> bool:
        """Whether jobs started now are the sweep's MPS clients (it runs only while the packed jobs do,
        so every job on a card shares the answer)."""
        return bool(self.mps_daemon and self.mps_daemon.running)

    def _probe(self):
        """The memory probe; CPU cards have no memory to check (one job each)."""
        return self.probe if self.on_gpu else _Unbounded()

    def _job_return(self, job: Job) -> JobReturn:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = job.idx
            sweep_config.hydra.job.num = job.idx
        job_dir = self.sweep_dir / str(sweep_config.hydra.sweep.subdir)
        return JobReturn(overrides=job.overrides, cfg=sweep_config, hydra_cfg=sweep_config, working_dir=str(job_dir),
                         task_name=sweep_config.hydra.job.name)

    def _share(self, card: Card) -> None:
        """Every job on `card` learns the most jobs its card has held since it started."""
        for idx in card.jobs:
            job = self.jobs[idx]
            job.jobs_on_device_max = max(job.jobs_on_device_max, len(card.jobs))
            share = {"gpu_uuid": card.uuid, "jobs_on_device_max": job.jobs_on_device_max,
                     "launcher_jobs_per_gpu": self.per_card if self.on_gpu else None, "mps": self._mps_serves()}
            tmp = job.share_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(share))
            os.replace(tmp, job.share_file)  # the job reads it whole or not at all

    def _start(self, job: Job, card: Card) -> None:
        HydraConfig.instance().set_config(job.ret.cfg)
        job_dir = Path(job.ret.working_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        extra = [f"hydra.run.dir={job_dir}"]
        if not any(o.startswith("wandb.group=") for o in job.overrides):
            extra.append(f"wandb.group={self.sweep_dir.name}")  # the sweep's W&B group, as in-process jobs get
        command = [part.format(python=sys.executable) for part in self.command] + job.overrides + extra
        env = dict(os.environ)
        if self.on_gpu:
            env["CUDA_VISIBLE_DEVICES"] = card.visible
        if self._mps_serves():
            env.update(self.mps_daemon.client_env())
        # Each job gets its share of the cores: N processes each starting one thread per core
        # oversubscribe the host (seen: a 32-core H200 host, 3 s per tiny CPU step instead of 20 ms).
        share = str(max(1, (os.cpu_count() or 1) // self._n_slots))
        env.setdefault("OMP_NUM_THREADS", share)
        # Likewise Inductor's compile workers (one per core by default, in every job that compiles).
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", share)
        share_dir = self.sweep_dir / ".device_share"
        share_dir.mkdir(exist_ok=True)
        job.card, job.share_file = card, share_dir / f"{job.idx}.json"
        env[DEVICE_SHARE_ENV] = str(job.share_file)
        card.jobs[job.idx] = job.expected_gib
        self.jobs[job.idx] = job
        self._share(card)
        job.logfile = open(job_dir / "launcher.log", "w")
        where = f" (GPU {card.index}, expects {job.expected_gib:.1f} GiB)" if self.on_gpu else ""
        log.info("#%d : %s%s", job.idx, " ".join(filter_overrides(job.overrides)), where)
        job.proc = subprocess.Popen(command, env=env, stdout=job.logfile, stderr=subprocess.STDOUT)


class _Unbounded:
    """The CPU's stand-in probe: always room (the CPU's packing is n_parallel, one job per slot)."""

    def free_total_gib(self, card: Card) -> Tuple[float, float]:
        return float("inf"), float("inf")
