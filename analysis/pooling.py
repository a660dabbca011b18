"""Like with like: which records are one run, and which runs pool over seeds.

- A run's identity is its resolved config minus the keys that only say how it runs, plus its data
  files' contents: the run key the harness itself uses to resume and skip runs
  (bench/run/resume.py `run_key`). Records of one identity are one run repeated: the newest `ok`
  one counts (else the newest), the others are dropped and named, so a died record whose run was
  later relaunched to `ok` no longer counts as died.
- Runs pool over seeds only when their identities are equal except for `seed`. Runs of one
  method that differ in anything else are different rows, labelled by the keys that differ
  ("lora [train.lr=0.0002]").
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from bench.run.resume import identity_config, run_key

SEED_KEY = "seed"
MAX_LABEL_KEYS = 3  # our choice: more differing keys than this are summarised as "+N more"


def identities(record: dict) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(run identity, pool identity, the pooled part of the config flattened) of one record;
    all None for a record without a config (nothing to compare: it pools by method alone)."""
    config = record.get("config")
    if not config:
        return record.get("run_key"), None, None
    data_files = record.get("data_files") or None
    unseeded = {**config, SEED_KEY: None}
    flat = _flatten(identity_config(unseeded))
    if data_files:  # the files' contents, as a short hash (the label of an edited data file)
        flat["data_files"] = hashlib.sha256(json.dumps(list(data_files.values())).encode()).hexdigest()[:8]
    return run_key(config, data_files), run_key(unseeded, data_files), flat


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
    return flat


def keep_newest(pairs: list[tuple[str, dict]], statuses: list[str]) -> tuple[list[int], list[dict]]:
    """Indices of the records that count (input order kept), and one line of data per dropped
    record: {run_dir, status, kept}. Within one run identity the newest `ok` record counts, or
    the newest record when none is ok (newest: `started_at`, then the later one found)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, record) in enumerate(pairs):
        run_id = identities(record)[0]
        names = (record.get("task"), record.get("model"), record.get("method"))
        groups[(*names, run_id) if run_id is not None else (i,)].append(i)
    kept, dropped = set(), []
    for members in groups.values():
        def newness(i: int) -> tuple:
            return (statuses[i] == "ok", pairs[i][1].get("started_at") or float("-inf"), i)
        best = max(members, key=newness)
        kept.add(best)
        dropped += [{"run_dir": pairs[i][0], "status": statuses[i], "kept": pairs[best][0]}
                    for i in members if i != best]
    return sorted(kept), dropped


def variant_labels(keys: list[tuple], pools: list[str | None], flats: list[dict | None]) -> list[str]:
    """One label per row: the method name, plus, when a (task, model, method) has runs of several
    pools, the config keys that set this pool apart. `keys` are (task, model, method) per row."""
    by_group: dict[tuple, dict] = defaultdict(dict)
    for key, pool, flat in zip(keys, pools, flats):
        by_group[key].setdefault(pool, flat)
    names: dict[tuple, str] = {}
    for key, members in by_group.items():
        if len(members) < 2:
            continue
        compared = [flat for flat in members.values() if flat is not None]
        differing = sorted({k for flat in compared for k in flat
                            if any(other.get(k, _MISSING) != flat[k] for other in compared)})
        seen: dict[str, int] = defaultdict(int)
        for pool, flat in members.items():
            if flat is None:
                text = "no config recorded"
            else:
                parts = [f"{k}={flat[k] if k in flat else 'unset'}" for k in differing[:MAX_LABEL_KEYS]]
                more = len(differing) - MAX_LABEL_KEYS
                text = ", ".join(parts + ([f"+{more} more"] if more > 0 else []))
            seen[text] += 1
            names[(key, pool)] = f"{key[2]} [{text}]" if seen[text] == 1 else f"{key[2]} [{text} #{seen[text]}]"
    return [names.get((key, pool), key[2]) for key, pool in zip(keys, pools)]


_MISSING = object()


def relabel(runs, identity: dict):
    """A subset of the runs with its labels recomputed (keys that differ only outside the subset
    no longer name its rows); `identity` is the collected frame's attrs["identity"]."""
    if runs.empty:
        return runs
    keys = list(zip(runs["task"], runs["model"], runs["method_name"]))
    pools = list(runs["pool"])
    out = runs.assign(method=variant_labels(keys, pools, [identity.get(p) for p in pools]))
    out.attrs = dict(runs.attrs)
    return out


def base_method(label: str) -> str:
    """"lora [train.lr=0.0002]" -> "lora"."""
    return str(label).split(" [", 1)[0]


def duplicate_seed_warnings(runs) -> list[str]:
    """One line per pooled row (task, model, method label) that holds a seed more than once: runs
    without a config to tell them apart, which then pool by method alone."""
    if runs.empty:
        return []
    lines = []
    ok = runs[runs["status"] == "ok"]
    for (task, model, method), group in ok.groupby(["task", "model", "method"], sort=False):
        counts = group["seed"].value_counts()
        repeated = counts[counts > 1]
        if len(repeated):
            seeds = ", ".join(f"seed {s} x{n}" for s, n in repeated.items())
            lines.append(f"warning: {task} / {model} / {method}: {seeds} (records without a config cannot be "
                         "told apart; their mean counts each)")
    return lines
