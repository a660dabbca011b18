"""The record schema, owned here: file names and the one walk that finds records, statuses, and
every key of result.json's `metrics`.

The ledger (bench/run/ledger.py) writes exactly these keys and analysis/collect.py reads them from
here, so a key added to one side cannot be missing from the other (tests/test_run.py checks a
real run's record against this list).
"""
from __future__ import annotations

import re
from pathlib import Path

RESULT_FILE, METRICS_FILE, SAMPLES_FILE = "result.json", "metrics.jsonl", "samples.jsonl"


def natural_key(path: Path) -> list:
    """Sweep order, not text order: job `2-...` before `10-...` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def record_paths(root: Path) -> list[Path]:
    """Every run's result.json below `root`, in sweep order (`natural_key`). A run's W&B dir keeps
    copies of its record (artifacts): never a run of its own, so they are left out."""
    root = Path(root)
    return sorted((path for path in root.rglob(RESULT_FILE) if "wandb" not in path.relative_to(root).parts),
                  key=natural_key)


# The environment variable naming the file a job of the parallel launcher reads its `device_share`
# from (hydra_plugins/slmbench_launcher writes it, bench/runtime.py device_share reads it); here,
# with no torch import, so the launcher's import stays light.
DEVICE_SHARE_ENV = "SLMBENCH_DEVICE_SHARE"

# ok: trained and evaluated; failed: raised; oom: CUDA out of memory; preempted: SIGTERM/SIGUSR1,
# interrupted: SIGINT (a checkpoint was written; relaunching resumes); running: written at start,
# left behind by a killed run (analysis/collect.py shows it as `died` once its process is gone).
STATUSES = ("ok", "failed", "oom", "preempted", "interrupted", "running")

# The top level of an `ok` result.json (a failed one adds `error`; a resumed one `resumed_from_step`;
# a reused one `reused_from`; `train.save_model=true` adds `saved_model`). `eval_split`: what the
# metrics score (eval.split: test | validation); `validation`: the held-out split of the training
# file, {size, seed, sha256} (bench/tasks/validation.py; size 0 and sha256 null when none).
RECORD_KEYS = ("status", "method", "model", "task", "seed", "run_key", "run_dir", "started_at", "finished_at",
               "pid", "host", "data_files", "weights", "eval_split", "validation",
               "metrics", "eval_protocol", "final_params_sha256", "config", "env", "schedule",
               # What ran fast (train.fast_path, compile, CUDA graphs), the compile's cache hits and
               # seconds, and how many jobs shared the device (time is the method's own only at 1).
               "fast_path", "compile", "device_share",
               "steps_per_epoch")  # optimizer steps per epoch: where the epochs of metrics.jsonl's steps begin

METRIC_KEYS = (
    # Accuracy: the task's primary metric averaged over its eval sets, its 95% interval (Wilson per
    # set, combined by MOVER: bench/records/stats.py), and every metric per set with its interval.
    "accuracy", "accuracy_ci95", "accuracy_by_task", "primary_metric",
    # Memory: peak allocated / reserved GPU memory while training and while evaluating (None on CPU),
    # allocator retries (lingua's signal for a run close to the limit), peak host RSS of the run.
    "peak_gpu_memory_gib", "peak_gpu_reserved_gib", "gpu_alloc_retries",
    "eval_peak_gpu_memory_gib", "eval_peak_gpu_reserved_gib", "peak_host_rss_gib",
    # Time: summed step time, eval time, loss-bearing tokens/s and median step after the warm-up.
    "train_wall_clock_s", "eval_wall_clock_s", "train_tokens_per_s", "median_step_s", "train_steps",
    "trainable_params", "total_params", "final_train_loss",
    # Which eval examples were scored: all (null), the first N, or a seeded sample of N.
    "eval_limit", "eval_sample",
)
