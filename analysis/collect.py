"""Collect every result.json below some directories into one pandas DataFrame (a row per run)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RESULT_FILE = "result.json"


class RecordError(ValueError):
    """A result.json that cannot be read; the message names the file."""


def find_records(dirs: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for directory in dirs:
        directory = Path(directory)
        paths += [directory] if directory.name == RESULT_FILE else sorted(directory.rglob(RESULT_FILE))
    return paths


def load_record(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read result record: {err}") from err
    for key in ("status", "method", "model", "task", "metrics"):
        if key not in record:
            raise RecordError(f"{path}: result record has no '{key}' key")
    return record


def collect(dirs: list[Path]) -> pd.DataFrame:
    """One row per run: identity columns, status, error, and the flat metrics."""
    rows = []
    for path in find_records(dirs):
        record = load_record(path)
        metrics = record.get("metrics") or {}
        row = {"run_dir": str(Path(path).parent), "status": record["status"], "method": record["method"],
               "model": record["model"], "task": record["task"], "seed": record.get("seed"),
               "error": (record.get("error") or {}).get("message")}
        row.update({k: v for k, v in metrics.items() if not isinstance(v, dict)})
        for set_name, scores in (metrics.get("accuracy_by_task") or {}).items():
            row.update({f"acc/{set_name}/{m}": v for m, v in scores.items()})
        rows.append(row)
    return pd.DataFrame(rows)
