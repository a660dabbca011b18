"""Shared fixtures: one cached tiny base model per test session, Hydra composition, CLI runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Small and deterministic: tests share the 2 CPU cores with each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Relative outputs (outputs/store, outputs/runs) of in-process runs land in the test's tmp dir."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """One base-model cache for the test sessions of this checkout (outputs/ is git-ignored): each
    tiny base is pretrained at most once. Entries are keyed by a hash of everything that makes
    them, so a reused entry is always the one a fresh build would produce."""
    path = REPO / "outputs" / "test-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def compose_config(*overrides: str):
    """The composed run config (no Hydra runtime), for in-process `run_job` calls."""
    import bench.config.schema  # noqa: F401 - the schema the config's defaults list names
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(cwd: Path, *args: str, check: bool = True, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """`slmbench ARGS` as a real process in `cwd` (outputs/ lands there)."""
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"slmbench {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def result_files(root: Path) -> list[Path]:
    """The run records below `root`, not the copies a run's W&B dir keeps of them (artifacts)."""
    return sorted(p for p in Path(root).rglob("result.json") if "wandb" not in p.relative_to(root).parts)
