"""A run's samples.jsonl (one line per eval question: eval_set, id, prompt, generation,
extracted, gold and a verdict per metric), read for intervals and paired tests."""
from __future__ import annotations

from pathlib import Path

from bench.records.schema import SAMPLES_FILE
from bench.tasks.sources import read_jsonl


class SamplesError(ValueError):
    """A samples.jsonl that cannot be used; the message names the file and line."""


def samples_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / SAMPLES_FILE


def read_samples(run_dir: str | Path) -> list[dict] | None:
    """The run's samples, or None when the run dir has no samples.jsonl (a W&B source, a run that
    failed before evaluating)."""
    path = samples_path(run_dir)
    if not path.is_file():
        return None
    rows = read_jsonl(path)  # bad JSON: a DataError naming file:line (bench/tasks/sources.py)
    for row in rows:
        if "eval_set" not in row.data:
            raise SamplesError(f"{row.where}: a sample is an object with an 'eval_set' key")
    return [row.data for row in rows]
