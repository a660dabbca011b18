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
# A few real GSM8K and MATH rows, committed (tests/fixtures/README.md): the data tests read these.
FIXTURES = REPO / "tests" / "fixtures"
# The assets folder (README "Assets"): the hub models' tokenizer and config files, the full data
# files. `../shared/data` beside the checkout, or where SLMBENCH_ASSETS points; the tiny-<hub>
# model yamls read the same variable, so in-process runs (which start in a tmp dir) find it too.
SHARED_DATA = Path(os.environ.get("SLMBENCH_ASSETS") or REPO.parent / "shared" / "data").resolve()
os.environ["SLMBENCH_ASSETS"] = str(SHARED_DATA)
# The hub models' tokenizer and config files below the assets folder (the tiny-<hub> model yamls').
QWEN25, LLAMA32, PHI4_MINI = "models/Qwen__Qwen2.5-0.5B", "models/meta-llama__Llama-3.2-1B", "models/microsoft__Phi-4-mini-instruct"
HUB_TOKENIZERS = pytest.mark.assets(QWEN25, LLAMA32, PHI4_MINI)
# The benchmark lab's `--data-dir`: an assets folder with the models and the full GSM8K.
HUB_ASSETS = pytest.mark.assets(QWEN25, LLAMA32, PHI4_MINI, "gsm8k/train.jsonl", "gsm8k/test.jsonl")
# CI sets it (.ci/run): a test whose assets are missing fails there instead of skipping.
REQUIRE_ASSETS = os.environ.get("SLMBENCH_REQUIRE_ASSETS") == "1"

# Small and deterministic: tests share the 2 CPU cores with each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config):
    config.addinivalue_line("markers", "assets(*paths): needs these paths below the assets folder "
                                       "(SLMBENCH_ASSETS, default ../shared/data); skips without them")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("assets"):
        missing = [p for p in mark.args if not (SHARED_DATA / p).exists()]
        if missing:
            absent(f"needs {', '.join(missing)} in the assets folder {SHARED_DATA}: set SLMBENCH_ASSETS "
                   f"to a folder holding them (README \"Assets\")")


def absent(reason: str) -> None:
    """Skip a test whose outside assets are missing, in one line saying how to provide them; fail
    instead under SLMBENCH_REQUIRE_ASSETS=1, so CI never skips silently."""
    if REQUIRE_ASSETS:
        pytest.fail(f"SLMBENCH_REQUIRE_ASSETS=1: this test {reason}", pytrace=False)
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def kept_full_model(tmp_path_factory, cache_dir) -> dict:
    """Two real runs that tests/test_launch_dir.py and tests/test_save_model.py assert different
    things about (one pair of processes for both): full fine-tuning that keeps its model, started
    from a user's directory outside the repository (relative run dirs), then that model evaluated
    through a relative `model.path`. The directory also holds the GSM8K fixture rows in data/."""
    import shutil

    work = tmp_path_factory.mktemp("user") / "work"
    (work / "data").mkdir(parents=True)
    for name in ("train.jsonl", "test.jsonl"):
        shutil.copy(FIXTURES / "gsm8k" / name, work / "data" / name)
    quiet = ("eval.limit=30", "wandb.mode=disabled", "device=cpu", f"cache_dir={cache_dir}")
    kept = run_cli(work, "method=full", "train.max_steps=20", "train.save_model=true", "hydra.run.dir=runs/keep", *quiet)
    run_cli(work, "method=none", "model.path=runs/keep/model", "hydra.run.dir=runs/again", *quiet)
    return {"work": work, "kept": work / "runs" / "keep", "again": work / "runs" / "again",
            "kept_output": kept.stdout + kept.stderr}


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
    """The run records below `root`, not the copies a run's W&B dir keeps of them (artifacts): the
    harness's own walk (bench/records/schema.py record_paths), so the tests find what it finds."""
    from bench.records.schema import record_paths

    return record_paths(root)
