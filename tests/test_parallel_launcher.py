"""hydra_plugins/slmbench_launcher: jobs run as separate processes, several per GPU when asked (admitted
by the card's memory, here a budget standing in for a GPU), share one compile cache and record how
many jobs shared their device, run as clients of the sweep's MPS server when asked (a stand-in
daemon here); SLURM config composes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, result_files, run_cli
from hydra_plugins.slmbench_launcher.admission import Card, MemoryBudget, headroom_gib, known_peaks_gib, pick

# NVIDIA's MPS control daemon cannot run without a GPU: a stand-in of its command line, first on PATH.
MPS_STAND_IN = {"PATH": f"{REPO / 'tests' / 'fixtures' / 'mps_stand_in'}{os.pathsep}{os.environ['PATH']}"}


def test_parallel_launcher_runs_each_job_in_its_own_process(tmp_path, cache_dir):
    proc = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.n_parallel=2",
                   "method=none,full", "seed=0,1", f"cache_dir={cache_dir}", "train.max_steps=3",
                   "eval.limit=8", "wandb.mode=disabled")
    records = [json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "multirun")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert len({r["env"]["pid"] for r in records}) == 4  # four processes, none of them the launcher's
    assert "2 at a time (CPU)" in proc.stderr + proc.stdout
    per_run, over_seeds = proc.stdout.split("Mean over seeds")  # a row per run, then one per method
    assert len([line for line in per_run.splitlines() if "| tiny-llama |" in line]) == 4
    assert len([line for line in over_seeds.splitlines() if "| tiny-llama |" in line]) == 2
    # Every job compiles into the sweep's cache under cache_dir (the first job's graphs serve the rest).
    for record in records:
        assert record["compile"]["cache_dir"] == {"inductor": str(cache_dir / "inductor"),
                                                  "triton": str(cache_dir / "triton")}
        assert record["fast_path"] == {"loss": "none", "compile": False, "cuda_graphs": False}
        # On the CPU the host is the device: the jobs the launcher ran beside this one, counted.
        assert record["device_share"]["gpu_uuid"] is None and 1 <= record["device_share"]["jobs_on_device_max"] <= 2
    assert max(r["device_share"]["jobs_on_device_max"] for r in records) == 2  # the first two start together
    assert "sweep: 4/4 done, 0 running, 0 failed" in proc.stderr + proc.stdout


def test_packed_jobs_wait_for_room_and_a_solo_stage_reruns_one_per_method(tmp_path, cache_dir):
    """One 'GPU' of 10 GiB (a memory budget: the CPU jobs ignore CUDA_VISIBLE_DEVICES), jobs expected
    at 4 GiB, three slots: two jobs fit at once, so no record may say more than two shared the card.
    The packed jobs are clients of the sweep's MPS daemon (a stand-in: no GPU here), which quits
    before the solo stage: the first job of each method again, alone, as an identity of its own.
    (method=none: evaluation only, the fastest job.)"""
    proc = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.gpus=[0]", "hydra.launcher.jobs_per_gpu=3",
                   "hydra.launcher.gpu_memory=budget:10", "hydra.launcher.expected_job_gib=4",
                   "hydra.launcher.memory_margin_gib=0", "hydra.launcher.solo_timing=true", "hydra.launcher.mps=true",
                   "method=none", "seed=0,1,2", f"cache_dir={cache_dir}", "eval.limit=4", "wandb.mode=disabled",
                   env=MPS_STAND_IN)
    records = [json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "multirun")]
    packed = [r for r in records if r["config"]["timing"] is None]
    solo = [r for r in records if r["config"]["timing"] == "solo"]
    assert len(packed) == 3 and all(r["status"] == "ok" for r in records)
    assert [r["device_share"]["launcher_jobs_per_gpu"] for r in packed] == [3] * 3
    assert max(r["device_share"]["jobs_on_device_max"] for r in packed) == 2  # 2 x 4 GiB fit, a third does not
    assert "expects 4.0 GiB" in proc.stderr + proc.stdout
    assert [(r["method"], r["seed"]) for r in solo] == [("none", 0)]
    assert all(r["device_share"]["jobs_on_device_max"] == 1 for r in solo)
    assert not {r["run_key"] for r in solo} & {r["run_key"] for r in packed}
    # MPS: the daemon and its server start before the first job, every packed job gets its pipe
    # directory, the daemon quits before the solo job starts, and its pipe directory goes with it.
    (control_log,) = (tmp_path / "outputs" / "multirun").glob("*/*/.mps/control.log")
    calls = [line.rsplit(" ", 1) for line in control_log.read_text().splitlines()]
    pipe_dir = calls[0][0].split(" ", 1)[1]
    assert [c for c, _ in calls] == [f"daemon {pipe_dir}", f"start_server -uid {os.getuid()}", "get_server_list", "quit"]
    assert float(calls[2][1]) < min(r["started_at"] for r in packed)
    assert max(r["finished_at"] for r in packed) < float(calls[3][1]) < solo[0]["started_at"]
    assert all(r["device_share"]["mps"] and r["env"]["cuda_mps_pipe_directory"] == pipe_dir for r in packed)
    assert not solo[0]["device_share"]["mps"] and solo[0]["env"]["cuda_mps_pipe_directory"] is None
    assert not Path(pipe_dir).exists()
    assert "MPS: the packed jobs are clients of this sweep's MPS server (pid 4242" in proc.stderr + proc.stdout


def test_mps_refuses_a_sweep_it_cannot_serve(tmp_path):
    """No silent fallback to time slicing: a daemon with no server, or a sweep with no GPU, stops
    the sweep before any job, naming the key (a CUDA program that cannot reach MPS would run without it)."""
    no_server = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.gpus=[0]",
                        "hydra.launcher.gpu_memory=budget:10", "hydra.launcher.mps=true", "method=none",
                        "wandb.mode=disabled", check=False, env={**MPS_STAND_IN, "MPS_STAND_IN_NO_SERVER": "1"})
    assert no_server.returncode != 0
    assert "hydra.launcher.mps=true: the daemon started, but no MPS server runs for this user" in no_server.stderr
    assert "set hydra.launcher.mps=false" in no_server.stderr
    assert not result_files(tmp_path / "outputs")
    (control_log,) = (tmp_path / "outputs" / "multirun").glob("*/*/.mps/control.log")
    assert control_log.read_text().splitlines()[-1].startswith("quit ")  # the daemon did not outlive the sweep
    cpu = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.mps=true", "method=none",
                  "wandb.mode=disabled", check=False, env=MPS_STAND_IN)
    assert cpu.returncode != 0 and "hydra.launcher.mps=true needs GPUs" in cpu.stderr


def test_admission_packs_a_card_by_memory_and_spreads_over_cards():
    budget = MemoryBudget(10.0)
    cards = budget.cards(["0"])
    pending = [(0, 4.0), (1, 4.0), (2, 4.0), (3, 1.5)]
    first = pick(pending, cards, budget, jobs_per_gpu=4)
    assert first == (0, cards[0])
    cards[0].jobs[0] = 4.0
    assert pick(pending[1:], cards, budget, 4) == (0, cards[0])
    cards[0].jobs[1] = 4.0
    # 2 GiB left: the 4 GiB job waits, the 1.5 GiB one behind it may start
    assert pick(pending[2:], cards, budget, 4) == (1, cards[0])
    cards[0].jobs[3] = 1.5
    assert pick(pending[2:3], cards, budget, 4) is None
    # jobs_per_gpu caps the count whatever the memory
    assert pick([(5, 0.1)], cards, MemoryBudget(100.0), jobs_per_gpu=3) is None
    # two cards: the next job goes to the empty one; a job larger than any card runs alone on one
    two = budget.cards(["0", "1"])
    two[0].jobs[0] = 1.0
    assert pick([(1, 1.0)], two, budget, 4)[1] is two[1]
    assert pick([(2, 50.0)], two, budget, 4)[1] is two[1]
    two[1].jobs[1] = 1.0
    assert pick([(2, 50.0)], two, budget, 4) is None


def test_headroom_counts_what_started_jobs_will_still_take():
    """nvidia-smi's free memory lags a job that has just started: its expected peak counts against the
    card until the card's use shows it (others' use at launch stays theirs)."""
    card = Card("0", "GPU-x", "GPU-x", baseline_used_gib=10.0, jobs={0: 8.0})
    assert headroom_gib(free=70.0, total=80.0, card=card) == pytest.approx(62.0)  # job 0 holds nothing yet
    assert headroom_gib(free=65.0, total=80.0, card=card) == pytest.approx(62.0)  # 5 of its 8 GiB taken
    assert headroom_gib(free=60.0, total=80.0, card=card) == pytest.approx(60.0)  # past its expected peak


def write_store_record(run_dir: Path, method: str, peak: float | None, eval_peak: float | None = None,
                       status: str = "ok", model: str = "m", task: str = "t") -> None:
    """A run's record as a store keeps it, with only what admission reads."""
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({
        "status": status, "method": method, "model": model, "task": task,
        "metrics": {"peak_gpu_reserved_gib": peak, "eval_peak_gpu_reserved_gib": eval_peak}}))


def test_expected_peaks_come_from_the_stores_finished_records(tmp_path):
    for i, (method, status, peak, eval_peak) in enumerate([("lora", "ok", 3.0, 5.5), ("lora", "ok", 4.0, 1.0),
                                                            ("full", "failed", 30.0, None), ("full", "ok", None, None)]):
        write_store_record(tmp_path / str(i), method, peak, eval_peak, status)
    assert known_peaks_gib(tmp_path) == {("lora", "m", "t"): 5.5}  # no GPU figure, no failed run
    pilot = tmp_path / "pilot"
    write_store_record(pilot / "0", method="lora", peak=7.0)
    write_store_record(pilot / "1", method="topk", peak=2.0)
    # several stores: the largest peak of each kind wins
    assert known_peaks_gib(tmp_path, pilot) == {("lora", "m", "t"): 7.0, ("topk", "m", "t"): 2.0}


def test_a_sweep_expects_the_peaks_another_store_recorded(tmp_path):
    """hydra.launcher.peaks_from: a pilot sweep's store tells this sweep's jobs their peaks (its own
    store holds none yet); a store that is not there is refused, naming the key."""
    write_store_record(tmp_path / "pilot" / "0", method="none", peak=4.5, model="tiny-llama", task="arithmetic")
    proc = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.gpus=[0]",
                   "hydra.launcher.gpu_memory=budget:10", "hydra.launcher.memory_margin_gib=0",
                   f"hydra.launcher.peaks_from=[{tmp_path / 'pilot'}]", "method=none", "seed=0", "eval.limit=2",
                   "wandb.mode=disabled")
    assert "expects 4.5 GiB" in proc.stderr + proc.stdout  # not expected_job_gib's 20
    missing = run_cli(tmp_path, "-m", "hydra/launcher=parallel", f"hydra.launcher.peaks_from=[{tmp_path / 'nowhere'}]",
                      "method=none", "wandb.mode=disabled", check=False)
    assert missing.returncode != 0 and "hydra.launcher.peaks_from:" in missing.stderr
    assert "not a directory" in missing.stderr


def test_slurm_launcher_config_composes(tmp_path):
    proc = run_cli(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert "SlurmLauncher" in proc.stdout
    for setting in ("gpus_per_node: 1", "partition: gpu", "max_num_timeout: 3", "timeout_min: 240"):
        assert setting in proc.stdout


def test_cards_are_named_by_uuid_through_the_launchers_own_visible_devices(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=2,3 the launcher's GPU 0 is physical GPU 2: its job gets that card's
    UUID (an index would be renumbered), and what others hold at launch is the card's baseline."""
    from hydra_plugins.slmbench_launcher.admission import NvidiaSmi

    rows = [{"index": str(i), "uuid": f"GPU-{i}", "free": str(80 * 1024 - 1024 * i), "total": str(80 * 1024)}
            for i in range(4)]
    monkeypatch.setattr(NvidiaSmi, "_rows", lambda self: rows)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-3")
    cards = NvidiaSmi().cards(["0", "1"])
    assert [(c.index, c.visible, c.uuid, c.baseline_used_gib) for c in cards] == [("0", "GPU-2", "GPU-2", 2.0),
                                                                                  ("1", "GPU-3", "GPU-3", 3.0)]
    assert NvidiaSmi().free_total_gib(cards[1]) == (77.0, 80.0)
