"""Each method against a baseline on the same questions: the paired difference of accuracies with
its 95% interval and p (a hierarchical bootstrap: seeds, then questions within them) and McNemar's
exact p (questions only), per model and eval set, combined over seeds (seed s of the method against
seed s of the baseline; analysis/stats.py says how). Built from samples.jsonl."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.pooling import base_method
from analysis.samples import read_samples
from analysis.stats import MIN_SEEDS, excludes_zero, paired_comparison
from analysis.tables import Table, eval_set_columns, interval_text, method_sort_key, signed

MARK = "*"  # beside a difference whose 95% CI excludes 0, over at least MIN_SEEDS seeds
COLUMNS = ["model", "eval set", "method", "vs", "seeds", "questions", "difference (points)", "95% CI",
           "p (bootstrap)", "p (McNemar)", "right only: method / baseline", "note"]
HEADER = (f"difference in accuracy points, mean over seeds; 95% CI and p (bootstrap): hierarchical bootstrap "
          f"resampling seeds, then questions within them (covers seed-to-seed variance); p (McNemar): exact "
          f"McNemar on the discordant questions pooled over seeds (questions only); {MARK}: the 95% CI "
          f"excludes 0, given at least {MIN_SEEDS} seeds (fewer cannot measure seed-to-seed variance: "
          "nothing is marked)")


def p_text(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def paired_verdicts(method_samples: list[dict], baseline_samples: list[dict], eval_set: str,
                    metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The two runs' verdicts on `eval_set`, question by question (matched by id; a repeated id
    by its occurrence), over the questions both runs answered, in the baseline's order."""
    def by_question(samples: list[dict]) -> dict:
        seen: dict[str, int] = {}
        out = {}
        for s in samples:
            if s["eval_set"] == eval_set and metric in s:
                key = (s.get("id"), seen.setdefault(s.get("id"), 0))
                seen[s.get("id")] += 1
                out[key] = bool(s[metric])
        return out
    ours, base = by_question(method_samples), by_question(baseline_samples)
    keys = [k for k in base if k in ours]
    return np.array([ours[k] for k in keys], dtype=bool), np.array([base[k] for k in keys], dtype=bool)


def paired_table(runs: pd.DataFrame, baseline: str) -> Table:
    """Rows: model x eval set x method (the baseline left out); a row without paired samples
    says why instead of a number."""
    ok = runs[runs["status"] == "ok"] if not runs.empty else runs
    sets = [c.removeprefix("acc/") for c in eval_set_columns(runs)]
    loaded: dict[str, list[dict] | None] = {}
    rows, data = [], []
    for (task, model), group in ok.groupby(["task", "model"], sort=False):
        by_method = {m: dict(zip(g["seed"], g["run_dir"])) for m, g in group.groupby("method")}
        metric = group["primary_metric"].dropna().iloc[0] if "primary_metric" in group else None
        base_runs = by_method.get(baseline, {})
        variants = sorted(m for m in by_method if base_method(m) == baseline and m != baseline)
        for method in sorted((m for m in by_method if m != baseline), key=method_sort_key):
            for eval_set in sets:
                if group[f"acc/{eval_set}"].notna().any():
                    if not base_runs and variants:
                        row = {"note": f"{baseline} ran in {len(variants)} configurations: pick one with "
                                       f"--baseline (e.g. '{variants[0]}')"}
                    else:
                        row = _compare(by_method[method], base_runs, eval_set, metric, loaded)
                    numbers = row.pop("numbers", {"note": row["note"]})
                    label = f"{task} / {model}" if runs["task"].nunique() > 1 else model
                    rows.append({"model": label, "eval set": eval_set, "method": method, "vs": baseline, **row})
                    data.append({"task": task, "model": model, "eval_set": eval_set, "method": method,
                                 "baseline": baseline, **numbers})
    display = pd.DataFrame(rows, columns=COLUMNS).astype(object).fillna("")
    return Table(display.set_index(["model", "eval set", "method"]), pd.DataFrame(data))


def _compare(method_runs: dict, base_runs: dict, eval_set: str, metric: str | None, loaded: dict) -> dict:
    seeds = [s for s in method_runs if s in base_runs]
    if not base_runs:
        return {"note": "no baseline run"}
    if not seeds:
        return {"note": "no seed in common with the baseline"}
    pairs = []
    for seed in seeds:
        ours, base = (_samples(method_runs[seed], loaded), _samples(base_runs[seed], loaded))
        if ours is None or base is None:
            return {"note": "no samples.jsonl (cannot pair questions)"}
        pair = paired_verdicts(ours, base, eval_set, metric)
        if len(pair[0]):
            pairs.append(pair)
    if not pairs:
        return {"note": f"no question of {eval_set} scored by {metric} in both runs"}
    result = paired_comparison(pairs)
    excludes = excludes_zero(result["lo"], result["hi"])
    marked = excludes and result["enough_seeds"]
    note = "" if result["enough_seeds"] else f"{result['seeds']} seed(s) < {MIN_SEEDS}: not marked"
    return {
        "seeds": result["seeds"], "questions": "/".join(str(n) for n in result["questions"]),
        "difference (points)": signed(100 * result["difference"]) + (MARK if marked else ""),
        "95% CI": interval_text(100 * result["lo"], 100 * result["hi"], brackets=False),
        "p (bootstrap)": p_text(result["p"]), "p (McNemar)": p_text(result["p_mcnemar"]),
        "right only: method / baseline": f"{result['method_only']} / {result['baseline_only']}",
        "note": note, "numbers": {**result, "ci_excludes_zero": excludes, "marked": marked, "note": note},
    }


def _samples(run_dir: str, loaded: dict) -> list[dict] | None:
    if run_dir not in loaded:
        loaded[run_dir] = read_samples(run_dir)
    return loaded[run_dir]
