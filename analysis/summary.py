"""Aggregate runs over seeds: mean, std, n per (task, model, method), and changes vs a baseline.

Only `ok` runs contribute numbers; failed and OOM runs are counted per group so that every table
can say so. std is the sample standard deviation (ddof=1): NaN for a single run, never 0.
"""
from __future__ import annotations

import pandas as pd

GROUP = ["task", "model", "method"]
SUMMARY_COLUMNS = [*GROUP, "metric", "mean", "std", "n"]


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """A metric column as floats; a metric no run recorded is an all-NaN column, not a KeyError."""
    if column not in df.columns:
        return pd.Series(float("nan"), index=df.index, dtype=float)
    return pd.to_numeric(df[column], errors="raise").astype(float)


def summarize(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Long form: one row per (task, model, method, metric) with mean, std and n over `ok` runs.

    n counts the ok runs that recorded the metric; a group whose runs all failed keeps its rows
    with n=0 (mean and std NaN), so it still shows up in the tables.
    """
    if df.empty or not metrics:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    ok = df["status"] == "ok"
    parts = []
    for metric in metrics:
        values = numeric(df, metric).where(ok)
        grouped = values.groupby([df[g] for g in GROUP], dropna=False, sort=False)
        part = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
        part.insert(len(GROUP), "metric", metric)
        parts.append(part)
    summary = pd.concat(parts, ignore_index=True)
    summary["n"] = summary["n"].astype(int)
    return summary[SUMMARY_COLUMNS]


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per (task, model, method): how many runs, and how many were ok / failed / oom."""
    if df.empty:
        return pd.DataFrame(columns=[*GROUP, "runs", "ok", "failed", "oom"])
    counts = pd.crosstab([df[g] for g in GROUP], df["status"])
    for status in ("ok", "failed", "oom"):
        if status not in counts.columns:
            counts[status] = 0
    counts["runs"] = counts[["ok", "failed", "oom"]].sum(axis=1)
    return counts[["runs", "ok", "failed", "oom"]].reset_index()


def against_baseline(summary: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Adds the baseline method's mean of the same (task, model, metric) and the change from it:
    `change_pct` = (mean - baseline) / baseline * 100 (the papers' "35% less memory" form) and
    `difference` = mean - baseline (accuracy points, once accuracies are in %).
    Empty where the baseline has no value or its mean is 0."""
    keys = ["task", "model", "metric"]
    base = summary[summary["method"] == baseline][[*keys, "mean"]].rename(columns={"mean": "baseline_mean"})
    out = summary.merge(base, on=keys, how="left")
    nonzero = out["baseline_mean"].where(out["baseline_mean"] != 0)
    out["change_pct"] = (out["mean"] - nonzero) / nonzero * 100
    out["difference"] = out["mean"] - out["baseline_mean"]
    return out
