"""Where a task's rows come from: a local jsonl file, or a hub dataset through `datasets`.

A source config (one per train/eval set in `conf/task/*.yaml`):

    hub: openai/gsm8k      # hub dataset id, used only when `path` is null
    config: main           # hub config name; a list concatenates configs in order
    split: test
    path: null             # a local jsonl file: when set, the hub is never contacted
    limit: null            # the first N rows only (quick runs); null = all

Rows keep their origin (`file:line` or `hub[config]:split#i`) so data errors can name it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import DataError
from bench.paths import existing_path


EXCERPT_CHARS = 80  # how much of a bad line an error message quotes (our choice: one terminal line)


@dataclass
class Row:
    origin: str          # "path:line" or "hub[config]:split#index"
    data: dict[str, Any]


def load_rows(source: Mapping, key: str) -> list[Row]:
    """Rows of one source; `key` is its config path (e.g. `task.train`) for error messages."""
    limit = source.get("limit")
    if limit is not None and int(limit) <= 0:
        raise ValueError(f"{key}.limit must be positive or null, got {limit}")
    if source.get("path"):
        rows = read_jsonl(existing_file(source["path"], f"{key}.path"), limit)
    elif source.get("hub"):
        rows = read_hub(source, key, limit)
    else:
        raise ValueError(f"{key}: set `path` (a local jsonl file) or `hub` (a hub dataset id)")
    if not rows:
        where = existing_file(source["path"], f"{key}.path") if source.get("path") else f"hub {source['hub']!r}"
        raise DataError(f"{key}: the source has no rows ({where})")
    return rows


def existing_file(path, key: str) -> Path:
    """The resolved data file; a missing path or a directory is named with its config key."""
    resolved = existing_path(path, key)
    if resolved.is_dir():
        raise DataError(f"{key}={str(path)!r}: {resolved} is a directory; give a jsonl file")
    return resolved


def read_jsonl(path, limit: int | None = None) -> list[Row]:
    rows: list[Row] = []
    with open(path, "rb") as f:  # bytes: a binary file is reported by line, not by a decoder's buffer
        for lineno, raw in enumerate(f, start=1):
            if limit is not None and len(rows) >= int(limit):
                break
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue  # a blank line (e.g. a trailing newline) holds no row
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno}): "
                                f"{excerpt(line)}") from err
            if not isinstance(data, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(data).__name__}")
            rows.append(Row(f"{path}:{lineno}", data))
    return rows


def decode_line(raw: bytes, path, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{lineno} is not UTF-8 JSON (byte {raw[err.start]:#04x} at column "
                        f"{err.start + 1}; a binary or compressed file?): {excerpt(raw)}") from None


def excerpt(text: str | bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of an offending line, escaped onto one line, at most `limit` characters of it."""
    shown = repr(text[:limit])
    return shown if len(shown) <= limit else shown[:limit] + "..."


def read_hub(source: Mapping, key: str, limit: int | None = None) -> list[Row]:
    import datasets  # imported here: local sources never touch the hub client

    if not source.get("split"):
        raise ValueError(f"{key}.split is required for hub source {source['hub']!r}")
    configs = source.get("config")
    configs = [None] if configs is None else [configs] if isinstance(configs, str) else list(configs)
    rows: list[Row] = []
    for config in configs:
        split = source["split"]
        dataset = datasets.load_dataset(source["hub"], name=config, split=split)
        for index, data in enumerate(dataset):
            if limit is not None and len(rows) >= int(limit):
                return rows
            rows.append(Row(f"{source['hub']}[{config}]:{split}#{index}", dict(data)))
    return rows


def field(row: Row, fields: Mapping, role: str, required: bool = True) -> Any:
    """The value of the column that `fields[role]` names, with an error naming what exists."""
    column = fields.get(role)
    if column is None:
        if required:
            raise ValueError(f"fields.{role} is not set; the rows have fields {sorted(row.data)}")
        return None
    if column not in row.data:
        raise DataError(f"{row.origin}: missing field {column!r} (fields.{role}); "
                        f"the row has fields {sorted(row.data)}")
    return row.data[column]
