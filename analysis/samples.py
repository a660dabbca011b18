"""A run's samples.jsonl (one line per eval question: eval_set, id, prompt, generation,
extracted, gold and a verdict per metric), read for intervals and paired tests."""
from __future__ import annotations

import json
from pathlib import Path

SAMPLES_FILE = "samples.jsonl"  # bench/records/recorder.py's name for it


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
    samples = []
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as err:
                raise SamplesError(f"{path}:{line_number}: not valid JSON: {err.msg}") from err
            if not isinstance(sample, dict) or "eval_set" not in sample:
                raise SamplesError(f"{path}:{line_number}: a sample is an object with an 'eval_set' key")
            samples.append(sample)
    return samples
