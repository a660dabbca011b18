"""Run records: result.json (atomic), metrics.jsonl, samples.jsonl in the run dir, and a W&B run.

The files are the source of truth (lingua's pattern); W&B mirrors them as the shared dashboard.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import logging

import torch

from bench.records.schema import METRICS_FILE, RESULT_FILE, SAMPLES_FILE

log = logging.getLogger(__name__)
WANDB_MODES = ("offline", "online", "disabled")
RECORD_MODE = 0o644


def strict(value: Any) -> Any:
    """`value` with every non-finite float (NaN, Infinity) made None: records are strict JSON, which
    every parser reads (json.dumps would write the bare `NaN` most parsers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, torch.Tensor):
        return strict(value.tolist())
    return value


def dumps(payload: Any, **kwargs) -> str:
    """Strict JSON of `payload` (non-finite floats as null)."""
    return json.dumps(strict(payload), allow_nan=False, default=_jsonable, **kwargs)


REDACTED = "<redacted: oc.env>"


def redacted_config(cfg) -> dict:
    """The resolved config as records show it: every value that came from an environment variable
    (`${oc.env:...}`, or an interpolation of such a value) replaced by REDACTED, so no secret passed
    that way reaches result.json or the W&B config (which `wandb sync` uploads)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    leaves = dict(_leaves(raw))
    secret: set[str] = set()
    while True:  # an interpolation of a redacted key is redacted too, to any depth
        more = {path for path, value in leaves.items() if path not in secret and isinstance(value, str) and (
            "oc.env" in value or any(f"${{{s}}}" in value or f"${{{s}." in value for s in secret))}
        if not more:
            break
        secret |= more
    for path in secret:
        node, *parents = resolved, *path.split(".")[:-1]
        for key in parents:
            node = node[int(key) if isinstance(node, list) else key]
        last = path.split(".")[-1]
        node[int(last) if isinstance(node, list) else last] = REDACTED
    return resolved


def _leaves(value: Any, prefix: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temp file in the same dir, fsync, then rename: a reader never sees half a file.
    Strict JSON: a non-finite float is written as null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, RECORD_MODE)  # mkstemp makes 0600; records are for everyone who reads the sweep
        with os.fdopen(fd, "w") as f:
            f.write(dumps(payload, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


REPO_ROOT = Path(__file__).resolve().parents[2]


def worktree_tree_sha(root: Path = REPO_ROOT) -> str | None:
    """The git tree id of the working tree as it is (tracked and untracked-not-ignored files), via a
    throwaway index: equal to `git rev-parse <commit>^{tree}` of a commit holding exactly these
    files. It names the code a benchmark ran where `.git` is older than the files (the device
    machine's copy keeps the `.git` of its session's start, so `git_sha` and `dirty` there describe
    that older commit). It hashes every file, so the benchmarks record it once per call
    (lab/real_workload.py), not every run."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run = lambda *args: subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, env=env)  # noqa: E731
        if run("add", "-A").returncode != 0:
            return None
        tree = run("write-tree")
        return tree.stdout.strip() if tree.returncode == 0 else None


def code_version() -> tuple[str | None, bool | None]:
    """(git sha, dirty) of the code that runs. Its checkout when the code is imported from one (an
    editable install, PYTHONPATH); else the checkout slmbench was started in, when that is a
    slmbench checkout (`pip install .` copies the code into site-packages, away from its .git);
    else `slmbench-<installed version>` with dirty unknown (None)."""
    from importlib import metadata

    from bench.paths import launch_dir

    def checkout_of(directory: Path) -> Path | None:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=directory, capture_output=True, text=True)
        root = Path(top.stdout.strip()) if top.returncode == 0 else None
        return root if root is not None and (root / "bench" / "cli.py").is_file() else None

    root = (checkout_of(REPO_ROOT) if (REPO_ROOT / ".git").exists() else None) or checkout_of(launch_dir())
    if root is not None:
        git = lambda *args: subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)  # noqa: E731
        sha = git("rev-parse", "HEAD")
        if sha.returncode == 0:
            return sha.stdout.strip(), bool(git("status", "--porcelain").stdout.strip())
    try:
        return f"slmbench-{metadata.version('slmbench')}", None
    except metadata.PackageNotFoundError:
        return None, None


def environment(device: torch.device) -> dict[str, Any]:
    import peft
    import transformers

    git_sha, dirty = code_version()
    return {
        "git_sha": git_sha,
        "dirty": dirty,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "pid": os.getpid(),  # tells apart the processes of a parallel sweep
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # the MPS pipe directory the job was given (the parallel launcher's server: hydra.launcher.mps=true)
        "cuda_mps_pipe_directory": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
    }


SAMPLE_FIELDS = ("eval_set", "id", "prompt", "generation", "extracted", "gold")


def samples_table(samples: list[dict], primary_metric: str | None = None):
    """A wandb.Table: eval set, id, prompt, generation, extracted, gold, `verdict` (the primary
    metric's; with none given, the only verdict, or all of them as JSON) and one column per verdict."""
    import wandb

    metrics = list(dict.fromkeys(k for s in samples for k in s if k not in SAMPLE_FIELDS))
    table = wandb.Table(columns=[*SAMPLE_FIELDS, "verdict", *metrics])
    for sample in samples:
        if primary_metric is not None:
            verdict = sample.get(primary_metric)
        else:
            verdicts = {m: sample[m] for m in metrics if m in sample}
            verdict = next(iter(verdicts.values())) if len(verdicts) == 1 else json.dumps(verdicts)
        table.add_data(*(None if sample.get(k) is None else str(sample[k]) for k in SAMPLE_FIELDS), verdict,
                       *(sample.get(m) for m in metrics))
    return table


def log_artifact(run, name: str, kind: str, paths: list[Path]) -> None:
    """Log `paths` (files; a directory adds its files) as the W&B artifact `name` of type `kind`.
    The files are also copied into the run's own `files/` folder, so an offline run dir holds them
    (offline, an artifact's staged copies live outside the run dir until `wandb sync`)."""
    import wandb

    with _staging_under(Path(run.dir).parent):
        _log_artifact(run, wandb, name, kind, paths)


@contextlib.contextmanager
def _staging_under(run_wandb_dir: Path):
    """W&B stages an artifact's files under WANDB_DATA_DIR (wandb/env.py get_data_dir; default the
    user's ~/.local/share/wandb, never cleaned); unless the user chose that dir, it is this run's
    W&B dir, where `wandb sync` finds them and which goes with the run."""
    if "WANDB_DATA_DIR" in os.environ:
        yield
        return
    os.environ["WANDB_DATA_DIR"] = str(run_wandb_dir / "data")
    try:
        yield
    finally:
        os.environ.pop("WANDB_DATA_DIR", None)


def _log_artifact(run, wandb, name: str, kind: str, paths: list[Path]) -> None:
    import shutil

    artifact = wandb.Artifact(name, type=kind)
    target = Path(run.dir) / "artifacts" / name
    target.mkdir(parents=True, exist_ok=True)
    for path in map(Path, paths):
        if path.is_dir():
            artifact.add_dir(str(path))
            shutil.copytree(path, target / path.name, dirs_exist_ok=True)
        elif path.is_file():
            artifact.add_file(str(path))
            shutil.copy2(path, target / path.name)
        else:
            raise FileNotFoundError(f"{path}: no such file for the W&B artifact {name!r}")
    run.log_artifact(artifact)


class RunRecorder:
    """Owns the run dir's record files and the run's W&B run (one per job, always finished)."""

    def __init__(self, run_dir: Path, config: dict, wandb_cfg, names: dict[str, str]):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.run_dir / METRICS_FILE, "a")
        self.wandb_run = None
        if wandb_cfg.mode != "disabled":
            import wandb

            # reinit="create_new": a second job in the same process gets its own run, never
            # the previous job's (wandb#2877).
            self.wandb_run = wandb.init(
                project=wandb_cfg.project, entity=wandb_cfg.entity, group=wandb_cfg.group,
                name=f"{names['method']}-{names['model']}-{names['task']}-s{config.get('seed')}",
                tags=[names["method"], names["model"], names["task"]], job_type="train",
                config=config, dir=str(self.run_dir), mode=wandb_cfg.mode, reinit="create_new",
                settings=wandb.Settings(silent=True),  # our own progress bars and log lines suffice
            )
            log.info("W&B %s run: %s", wandb_cfg.mode, Path(self.wandb_run.dir).parent)

    def log_step(self, step: int, metrics: dict[str, Any]) -> None:
        self._metrics.write(dumps({"step": step, **metrics}) + "\n")
        self._metrics.flush()  # a run that dies keeps every step it logged
        if self.wandb_run is not None:
            # lists (a block method's active_block_ids) stay in metrics.jsonl: W&B charts scalars
            self.wandb_run.log({f"train/{k}": v for k, v in metrics.items()
                                if v is not None and not isinstance(v, list)}, step=step)

    def write_samples(self, samples: list[dict], primary_metric: str | None = None) -> None:
        """samples.jsonl; with W&B on, the same samples as a wandb.Table (`eval/samples`)."""
        with open(self.run_dir / SAMPLES_FILE, "w") as f:
            for sample in samples:
                f.write(dumps(sample) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({"eval/samples": samples_table(samples, primary_metric)})

    def log_artifact(self, name: str, kind: str, paths: list[Path]) -> None:
        """The files (result.json, metrics.jsonl, samples.jsonl, ...) as one W&B artifact of this run."""
        if self.wandb_run is not None:
            log_artifact(self.wandb_run, name, kind, paths)

    def write_result(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.run_dir / RESULT_FILE, result)
        if self.wandb_run is not None:
            self.wandb_run.summary.update(wandb_summary(strict(result)))

    def record_failure(self, result: dict[str, Any]) -> None:
        """The failure path: result.json first, then W&B, which is always finished (also when
        result.json cannot be written: that error is raised after). Never raises from the W&B
        side, so the caller can still re-deliver a preemption signal (exit 143)."""
        try:
            write_json_atomic(self.run_dir / RESULT_FILE, result)
        finally:
            try:
                if self.wandb_run is not None:
                    self.wandb_run.summary.update(wandb_summary(strict(result)))
            except Exception as err:  # noqa: BLE001 - the record on disk is the source of truth
                log.error("W&B summary of the failed run not written: %s: %s", type(err).__name__, err)
            finally:
                self.close(failed=True)

    def close(self, failed: bool = False) -> None:
        if self._metrics.closed:
            return
        self._metrics.close()
        if self.wandb_run is not None:
            run, self.wandb_run = self.wandb_run, None
            run.finish(exit_code=1 if failed else 0)


def wandb_summary(result: dict[str, Any]) -> dict[str, Any]:
    """result.json flattened for W&B's run summary; a failed record's metrics may all be None."""
    metrics = result.get("metrics") or {}
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    for set_name, scores in (metrics.get("accuracy_by_task") or {}).items():
        flat.update({f"accuracy/{set_name}/{m}": v for m, v in scores.items()})
    return {"status": result["status"], **flat}
