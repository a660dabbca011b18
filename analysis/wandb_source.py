"""`slmbench-report --wandb ENTITY/PROJECT`: the same records, read from W&B's API instead of disk.

bench/records.RunRecorder gives each W&B run the resolved config, the tags [method, model, task]
and a summary holding `status`, the flat metrics and `accuracy/<set>/<metric>`; this module turns
such a run back into a result.json-shaped record so that every table is built the same way.
Not exercised against the live API in our tests (no network there); the conversion is tested.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from analysis.collect import RecordError, check_record


def run_to_record(run: Any, where: str) -> dict:
    """A W&B public-API run (`.config`, `.summary`, `.tags`) -> a result.json-shaped record."""
    config, summary, tags = dict(run.config), dict(run.summary), list(run.tags or [])
    if not tags:
        raise RecordError(f"{where}: W&B run has no tags; slmbench tags runs [method, model, task]")
    metrics: dict[str, Any] = {}
    by_task: dict[str, dict] = {}
    for key, value in summary.items():
        if key.startswith("_") or key == "status" or isinstance(value, dict):
            continue  # W&B's own bookkeeping (_step, _runtime, _wandb)
        if key.startswith("accuracy/"):
            _, set_name, metric = key.split("/", 2)
            by_task.setdefault(set_name, {})[metric] = value
        else:
            metrics[key] = value
    metrics["accuracy_by_task"] = by_task
    record = {
        "status": summary.get("status"), "method": tags[0],
        "model": (config.get("model") or {}).get("name"), "task": (config.get("task") or {}).get("name"),
        "seed": config.get("seed"), "metrics": metrics, "config": config,
    }
    if record["status"] in ("failed", "oom"):
        # The error text lives in the run's result.json and logs; the summary has only the status.
        record["error"] = {"type": None, "message": "not mirrored to W&B: see the run's result.json", "step": None}
    check_record(record, where)
    return record


def records_from_wandb(path: str, api: Any = None) -> Iterator[tuple[str, dict]]:
    """(source, record) for every finished run of `ENTITY/PROJECT` (running ones are named on stderr)."""
    if path.count("/") != 1:
        raise ValueError(f"--wandb {path!r}: expected ENTITY/PROJECT")
    if api is None:
        import wandb

        api = wandb.Api()
    for run in api.runs(path):
        where = f"wandb:{path}/{run.id}"
        if getattr(run, "state", None) == "running":
            # A job still running has no result.json on disk either: not a run to tabulate yet.
            print(f"slmbench-report: skipping {where}: still running", file=sys.stderr)
            continue
        if "status" not in dict(run.summary):
            raise RecordError(f"{where}: W&B run has no 'status' in its summary (still running, or not slmbench's)")
        yield where, run_to_record(run, where)
