"""hydra_plugins/slmbench_launcher: a 4-job sweep runs as separate processes; SLURM config composes."""
from __future__ import annotations

import json

from conftest import result_files, run_cli


def test_parallel_launcher_runs_each_job_in_its_own_process(tmp_path, cache_dir):
    proc = run_cli(tmp_path, "-m", "hydra/launcher=parallel", "hydra.launcher.n_parallel=2",
                   "method=none,full", "seed=0,1", f"cache_dir={cache_dir}", "train.max_steps=3",
                   "eval.limit=8", "wandb.mode=disabled")
    records = [json.loads(p.read_text()) for p in result_files(tmp_path / "outputs" / "multirun")]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert len({r["env"]["pid"] for r in records}) == 4  # four processes, none of them the launcher's
    assert "2 at a time (CPU)" in proc.stderr + proc.stdout
    assert len([line for line in proc.stdout.splitlines() if "| tiny-llama |" in line]) == 4


def test_slurm_launcher_config_composes(tmp_path):
    proc = run_cli(tmp_path, "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert "SlurmLauncher" in proc.stdout
    for setting in ("gpus_per_node: 1", "partition: gpu", "max_num_timeout: 3", "timeout_min: 240"):
        assert setting in proc.stdout
