"""A real SLURM on localhost runs a sweep through `hydra/launcher=slurm`; two jobs are preempted.

The fixture starts munged, slurmctld and slurmd (Debian's `munge` and `slurm-wlm`, as root) from a
slurm.conf generated in a temp dir: one CPU-only node with 2 CPUs, no cgroups, no accounting.
`.ci/run` installs the packages and sets SLMBENCH_REQUIRE_ASSETS=1: there a machine without them fails
this test; elsewhere it skips, saying how to install them.

The sweep is 4 jobs of `python -m bench.cli` (submitit pickles the task, slurmd runs it). Job 0 is
requeued by the scheduler (`scontrol requeue`: SIGTERM, then the job is pending again); job 2, which
starts in the CPU job 0 freed, gets the launcher's own preemption signal (`scancel --signal=USR1`:
the run checkpoints, then submitit requeues the job itself). Both must come back, resume from their checkpoint and end with the same
parameters, bit for bit, as an unbroken run of the same config outside SLURM.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, absent

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sinfo", "squeue", "sbatch", "srun", "scontrol", "scancel")
MAX_STEPS, CHECKPOINT_EVERY = 100, 5
SWEEP = ("method=full,lora", "seed=0,1")  # jobs 0-3: (full, 0), (full, 1), (lora, 0), (lora, 1)
RUN = (f"train.max_steps={MAX_STEPS}", f"train.checkpoint_every={CHECKPOINT_EVERY}", "eval.limit=10",
       "wandb.mode=disabled")
# Fits the 2-CPU node: one CPU per job, no GPU, no memory request (the node states no RealMemory).
LAUNCHER = ("hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null", "hydra.launcher.timeout_min=30")
# Bounds that only stop a broken scheduler from hanging CI; no assertion depends on them.
START_TIMEOUT_S, SWEEP_TIMEOUT_S = 60, 420

SLURM_CONF = """\
ClusterName=slmbenchtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={root}/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# no cgroups in containers: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# the node below is what the jobs get, whatever the host has
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logs(root: Path) -> str:
    parts = []
    for name in ("munged.log", "slurmctld.log", "slurmd.log"):
        path = root / name
        if path.exists():
            parts.append(f"--- {path} (tail)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(parts)


def _wait_for_idle_node(env: dict, root: Path, daemons: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = [p.args[0] for p in daemons if p.poll() is not None]
        if dead:
            pytest.fail(f"{', '.join(dead)} exited at start\n{_logs(root)}")
        state = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], env=env, capture_output=True,
                               text=True)
        if state.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    pytest.fail(f"the SLURM node never became idle in {START_TIMEOUT_S} s\n{_logs(root)}")


def _stop(env: dict, daemons: list[subprocess.Popen]) -> None:
    """Cancel what is left in the queue, then stop the daemons this fixture started (slurmd, slurmctld, munged)."""
    subprocess.run(["scancel", "--partition=debug"], env=env, capture_output=True)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True)
        if queue.returncode != 0 or not queue.stdout.strip():
            break
        time.sleep(0.5)
    for proc in reversed(daemons):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory) -> dict:
    """A single-node SLURM on localhost; yields the environment its clients need (SLURM_CONF)."""
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        absent(f"needs {', '.join(missing)}: install SLURM and munge first "
               "(as root: apt-get install -y slurm-wlm munge; .ci/run does it)")
    if os.geteuid() != 0:
        absent("runs slurmd as root (SlurmdUser=root): run it as root")
    root = tmp_path_factory.mktemp("slurm")  # 0700: munged refuses a socket dir that others can write
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, ctld_port=_free_port(), slurmd_port=_free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    commands = [
        ["munged", "--foreground", "--force", f"--socket={root}/munge.socket", f"--key-file={key}",
         f"--pid-file={root}/munged.pid", f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"],
        ["slurmctld", "-D", "-c", "-f", str(conf)],  # -c: no state from an earlier cluster
        ["slurmd", "-D", "-N", "localhost", "-f", str(conf)],
    ]
    daemons: list[subprocess.Popen] = []
    try:
        for command in commands:
            with open(root / f"{command[0]}.out", "w") as out:
                daemons.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))
            if command[0] == "munged":
                _wait_for_path(root / "munge.socket", daemons[-1], root)
        _wait_for_idle_node(env, root, daemons)
        yield env
    finally:
        _stop(env, daemons)


def _wait_for_path(path: Path, proc: subprocess.Popen, root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{proc.args[0]} did not create {path}\n{_logs(root)}")
        time.sleep(0.1)


def _last_step(run_dir_glob: str, sweep_dir: Path) -> int:
    for metrics in sweep_dir.glob(run_dir_glob + "/metrics.jsonl"):
        text = metrics.read_text()
        lines = text[:text.rfind("\n") + 1].splitlines()  # a line still being written is not read
        if lines:
            return json.loads(lines[-1])["step"]
    return 0


def _wait_past_checkpoint(job_num: int, sweep_dir: Path, sweep: subprocess.Popen, log: Path) -> None:
    """Until job `job_num` logged the step after its first checkpoint (saved right after that step's log)."""
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while _last_step(f"{job_num}-*", sweep_dir) <= CHECKPOINT_EVERY:
        if sweep.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"job {job_num} never passed step {CHECKPOINT_EVERY}\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    assert _last_step(f"{job_num}-*", sweep_dir) < MAX_STEPS, "too late: the run has finished training"


def _wait_for_sweep(sweep: subprocess.Popen, env: dict, array_id: str, sweep_dir: Path, log: Path) -> None:
    """Until the launcher returns. A job that ended without its result would leave submitit waiting
    for ever (no sacct here to say it failed): that fails the test at once, with the job's log."""
    deadline = time.monotonic() + SWEEP_TIMEOUT_S
    while sweep.poll() is None:
        jobs = subprocess.run(["scontrol", "show", "job", "-o", array_id], env=env, capture_output=True, text=True)
        for line in jobs.stdout.splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if fields.get("JobState") in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
                task = f"{array_id}_{fields.get('ArrayTaskId')}"
                job_log = "".join(p.read_text() for p in sweep_dir.glob(f".submitit/{task}/*_log.*"))
                pytest.fail(f"job {task} ended {fields['JobState']} (exit {fields.get('ExitCode')}), "
                            f"not requeued\n{job_log[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the sweep did not finish in {SWEEP_TIMEOUT_S} s\n{log.read_text()[-4000:]}")
        time.sleep(1)


def _slurm(env: dict, *args: str) -> str:
    # scancel retries for as long as slurmctld answers "try again later": bounded, so that a late
    # retry can never signal the job's next start.
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def _results(sweep_dir: Path) -> dict[int, dict]:
    results = {}
    for path in sweep_dir.glob("*/result.json"):
        results[int(path.parent.name.split("-")[0])] = json.loads(path.read_text())
    return results


def test_sweep_on_real_slurm_survives_preemption(local_slurm, cache_dir, tmp_path):
    env = {**local_slurm, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    common = (*SWEEP, *RUN, f"cache_dir={cache_dir}")
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    with open(log, "w") as out:
        sweep = subprocess.Popen([sys.executable, "-m", "bench.cli", "-m", *LAUNCHER, *common,
                                  f"store_dir={tmp_path / 'store'}", f"hydra.sweep.dir={sweep_dir}"],
                                 cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    # The unbroken runs of the same configs: in one process, outside SLURM, with their own store.
    reference = subprocess.Popen([sys.executable, "-m", "bench.cli", "-m", *common,
                                  f"store_dir={tmp_path / 'reference-store'}",
                                  f"hydra.sweep.dir={tmp_path / 'reference'}"],
                                 cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_past_checkpoint(0, sweep_dir, sweep, log)
        array_id = next(sweep_dir.glob(".submitit/*_0")).name.rsplit("_", 1)[0]
        _slurm(env, "scontrol", "requeue", f"{array_id}_0")  # what a preempting scheduler does
        _wait_past_checkpoint(2, sweep_dir, sweep, log)
        _slurm(env, "scancel", "--signal=USR1", f"{array_id}_2")  # the launcher's signal before a timeout
        _wait_for_sweep(sweep, env, array_id, sweep_dir, log)
        reference_output, _ = reference.communicate(timeout=SWEEP_TIMEOUT_S)
    finally:
        for proc in (sweep, reference):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
    assert sweep.returncode == 0, log.read_text()[-5000:]
    assert reference.returncode == 0, reference_output[-5000:]

    results = _results(sweep_dir)
    assert sorted(results) == [0, 1, 2, 3]
    assert {n: r["status"] for n, r in results.items()} == {n: "ok" for n in range(4)}
    unbroken = {(r["method"], r["seed"]): r for r in _results(tmp_path / "reference").values()}
    for num in (0, 2):
        job = _slurm(env, "scontrol", "show", "job", f"{array_id}_{num}")
        assert "Restarts=1" in job, job
        result = results[num]
        assert CHECKPOINT_EVERY <= result["resumed_from_step"] < MAX_STEPS
        assert result["final_params_sha256"] == unbroken[(result["method"], result["seed"])]["final_params_sha256"]
    job_logs = {num: "".join(p.read_text() for p in sweep_dir.glob(f".submitit/{array_id}_{num}/*_log.*"))
                for num in (0, 2)}
    assert "received SIGTERM: stopping at the end of this step" in job_logs[0]
    # USR1 reached the run first (a checkpoint at that step), then submitit, which requeued the job.
    assert "received SIGUSR1: stopping at the end of this step" in job_logs[2]
    assert f"Requeued job {array_id}_2" in job_logs[2]
    for num in (1, 3):
        assert "resumed_from_step" not in results[num]
        assert results[num]["final_params_sha256"] == unbroken[(results[num]["method"], results[num]["seed"])][
            "final_params_sha256"]
