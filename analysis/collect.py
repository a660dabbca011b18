"""Collect every result.json below some directories into one pandas DataFrame (a row per run:
records of one run repeated count once, analysis/pooling.py).

Columns: the run's identity (run_dir, status, method, model, task, seed), its error (failed/OOM
runs keep their row, metrics empty), the flat metrics, one `acc/<eval set>` column per eval set
holding that set's primary metric (plus `acc/<eval set>/<metric>` for every score), and the
resolved config flattened as `cfg/<dotted.key>` (the config choices of each run).
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.pooling import identities, keep_newest, variant_labels
from analysis.samples import read_samples
from bench.records.stats import CI_SUFFIX, with_intervals
from bench.records.schema import RESULT_FILE, STATUSES, record_paths

# A `running` record whose process is gone: killed without a chance to write (SIGKILL, OOM killer,
# node failure). On another host we cannot look, and say so.
DIED, UNKNOWN_RUNNING = "died", "unknown-running"
IDENTITY_KEYS = ("status", "method", "model", "task", "metrics")
TEXT_METRICS = ("primary_metric", "eval_sample")  # the metrics that are words, not numbers


class RecordError(ValueError):
    """A result.json that cannot be used; the message names the file (and line, for bad JSON)."""


def find_records(dirs: Iterable[Path]) -> list[Path]:
    paths: list[Path] = []
    for directory in dirs:
        directory = Path(directory)
        if directory.name == RESULT_FILE:
            paths.append(directory)
        elif not directory.exists():
            raise FileNotFoundError(f"{directory}: no such directory (searched for {RESULT_FILE})")
        else:
            paths += record_paths(directory)
    return paths


def load_record(path: Path) -> dict:
    """Read and check one result.json; every problem is reported with the file's path."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise RecordError(f"{path}: cannot read result record: {err}") from err
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from err
    check_record(record, str(path))
    return record


def check_record(record: Any, where: str) -> None:
    """The schema of ../shared/DESIGN.md "Records", as far as the analysis relies on it."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a result record is a JSON object, got {type(record).__name__}")
    for key in IDENTITY_KEYS:
        if key not in record:
            raise RecordError(f"{where}: result record has no '{key}' key")
    if record["status"] not in STATUSES:
        raise RecordError(f"{where}: status={record['status']!r}; allowed: {', '.join(STATUSES)}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict):
        raise RecordError(f"{where}: 'metrics' must be an object, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if key == "accuracy_by_task":
            _check_accuracy_by_task(value, where)
        elif key.endswith(CI_SUFFIX):
            _check_interval(value, f"{where}: metrics.{key}")
        elif key not in TEXT_METRICS and value is not None and not _is_number(value):
            raise RecordError(f"{where}: metrics.{key}={value!r} is not a number or null")
    if record["status"] not in ("ok", "running"):
        error = record.get("error")
        if not isinstance(error, dict) or not {"type", "message"} <= error.keys():
            raise RecordError(f"{where}: a '{record['status']}' record needs error: {{type, message, step}}")


def _check_accuracy_by_task(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(s, dict) for s in value.values()):
        raise RecordError(f"{where}: metrics.accuracy_by_task must map eval set -> {{metric: value}}")
    for set_name, scores in value.items():
        for metric, score in scores.items():
            if metric.endswith(CI_SUFFIX):
                _check_interval(score, f"{where}: metrics.accuracy_by_task.{set_name}.{metric}")
            elif score is not None and not _is_number(score):
                raise RecordError(f"{where}: metrics.accuracy_by_task.{set_name}.{metric}={score!r} is not a number")


def _check_interval(value: Any, where: str) -> None:
    """A 95% interval is [lo, hi] (bench/records/stats.py), numbers or nulls."""
    if value is None:
        return
    if not (isinstance(value, list) and len(value) == 2 and all(v is None or _is_number(v) for v in value)):
        raise RecordError(f"{where}={value!r} is not an interval [lo, hi]")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_to_row(record: dict, source: str) -> dict[str, Any]:
    """One flat row; `source` is where the record came from (its run dir, or a W&B run path)."""
    metrics = _with_intervals(record, source)
    error = record.get("error") or {}
    row: dict[str, Any] = {
        "run_dir": source, "status": live_status(record), "method": record["method"],
        "model": record["model"], "task": record["task"], "seed": record.get("seed"),
        "error": error.get("message"), "error_type": error.get("type"), "error_step": error.get("step"),
        "git_sha": (record.get("env") or {}).get("git_sha"),
        "device": (record.get("env") or {}).get("device_name"),
        # How many jobs shared the run's GPU at most (None: not recorded, treated as alone).
        "jobs_on_device_max": (record.get("device_share") or {}).get("jobs_on_device_max"),
        "eval_split": record.get("eval_split"), "validation_size": (record.get("validation") or {}).get("size"),
        "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
        # A run relaunched from a checkpoint: its peak memory covers only the part after the relaunch.
        "resumed_from_step": record.get("resumed_from_step"),
    }
    row.update(_interval_columns({k: v for k, v in metrics.items() if not isinstance(v, dict)}))
    primary = metrics.get("primary_metric")
    for set_name, scores in (metrics.get("accuracy_by_task") or {}).items():
        row.update(_interval_columns({f"acc/{set_name}/{m}": v for m, v in scores.items()}))
        if primary is not None:
            row[f"acc/{set_name}"] = scores.get(primary)
            interval = scores.get(f"{primary}{CI_SUFFIX}") or [None, None]
            row[f"acc/{set_name}/ci95_lo"], row[f"acc/{set_name}/ci95_hi"] = interval
    row.update({f"cfg/{k}": v for k, v in flatten(record.get("config") or {}).items()})
    return row


def _with_intervals(record: dict, source: str) -> dict:
    """The record's metrics; a run recorded before result.json carried 95% intervals gets them
    from the samples.jsonl beside it (the same function the run uses)."""
    metrics = record.get("metrics") or {}
    if record["status"] != "ok" or "accuracy_ci95" in metrics or not metrics.get("accuracy_by_task"):
        return metrics
    samples = read_samples(source)
    return metrics if samples is None else with_intervals(metrics, samples)


def _interval_columns(values: dict[str, Any]) -> dict[str, Any]:
    """`<name>_ci95: [lo, hi]` -> `<name>_ci95_lo`, `<name>_ci95_hi` (a column holds numbers)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key.endswith(CI_SUFFIX):
            out[f"{key}_lo"], out[f"{key}_hi"] = value if value is not None else (None, None)
        else:
            out[key] = value
    return out


def live_status(record: dict) -> str:
    """The record's status, with a `running` record checked against its process: `died` when it
    is gone (same host), `unknown-running` when it ran on another host."""
    if record["status"] != "running":
        return record["status"]
    if record.get("host") != socket.gethostname() or record.get("pid") is None:
        return UNKNOWN_RUNNING
    return "running" if process_alive(int(record["pid"])) else DIED


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:  # a killed child its parent has not reaped yet is a zombie: dead, not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> dotted keys; lists become JSON text so a column stays hashable."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def frame_from_records(records: Iterable[tuple[str, dict]]) -> pd.DataFrame:
    """(source, record) pairs -> the DataFrame every table is built from: one row per run
    identity (the newest ok record; the others are listed in `df.attrs["superseded"]`), `method`
    labelled so that only runs equal but for the seed share a label (analysis/pooling.py), the
    plain method name in `method_name`."""
    pairs = list(records)
    kept, superseded = keep_newest(pairs, [live_status(record) for _, record in pairs])
    rows, keys, pools, flats = [], [], [], []
    for i in kept:
        source, record = pairs[i]
        row = record_to_row(record, source)
        row["run_identity"], row["pool"], flat = identities(record)
        rows.append(row)
        keys.append((row["task"], row["model"], row["method"]))
        pools.append(row["pool"])
        flats.append(flat)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["run_dir", "status", "method", "method_name", "model", "task", "seed", "error"])
    else:
        df.insert(df.columns.get_loc("method") + 1, "method_name", df["method"])
        df["method"] = variant_labels(keys, pools, flats)
    df.attrs["superseded"] = superseded
    df.attrs["identity"] = dict(zip(pools, flats))  # pool -> its config, to relabel a subset (pooling.relabel)
    return df


def collect(dirs: Iterable[Path]) -> pd.DataFrame:
    """One row per run below `dirs`: identity columns, status, error, flat metrics, config."""
    pairs = [(str(Path(p).parent), load_record(p)) for p in find_records(dirs)]
    pairs = [(source, record) for source, record in pairs if not is_store_copy(source, record)]
    return frame_from_records(drop_reused_copies(drop_duplicate_runs(pairs)))


def mixed_commits_warning(runs: pd.DataFrame) -> str | None:
    """One line naming the commits when the runs come from more than one: their numbers may
    differ because the code did (the run key hashes the config and data, not the code)."""
    if "git_sha" not in runs or runs["git_sha"].dropna().nunique() < 2:
        return None
    counts = runs["git_sha"].dropna().value_counts()
    named = ", ".join(f"{sha[:10]} ({n} runs)" for sha, n in counts.items())
    return f"warning: these runs come from {len(counts)} commits: {named}; compare them with care"


def is_store_copy(source: str, record: dict) -> bool:
    """The copy a finished run keeps in `store_dir/<run key>/` (bench/run/store.py), never a run
    of its own: `slmbench-report` with no argument reads outputs/, which holds outputs/store/."""
    return (record.get("run_key") is not None and Path(source).name == record["run_key"]
            and not _same_dir(source, record.get("run_dir")))


def drop_duplicate_runs(pairs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Two files that record the same run dir are one run: the one in that dir is kept."""
    kept: dict[str, tuple[str, dict]] = {}  # run dir -> its pair, in first-seen order
    for source, record in pairs:
        run = str(Path(record.get("run_dir") or source).resolve())
        if run not in kept or _same_dir(source, run):
            kept[run] = (source, record)
    return list(kept.values())


def _same_dir(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def drop_reused_copies(pairs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """A relaunched sweep's skipped job holds a copy of the finished run's record (`reused_from`);
    when that original is collected too, the copy goes, so no run is counted twice."""
    sources = {str(Path(source).resolve()) for source, _ in pairs}
    return [(source, record) for source, record in pairs
            if not (record.get("reused_from") and str(Path(record["reused_from"]).resolve()) in sources)]
