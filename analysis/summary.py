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


# Time and memory: what another job on the same GPU changes. Ratios of these are refused from
# runs that shared their GPU (result.json `device_share.jobs_on_device_max` > 1).
TIMING_METRICS = ("train_wall_clock_s", "eval_wall_clock_s", "train_tokens_per_s", "median_step_s",
                  "peak_gpu_memory_gib", "peak_gpu_reserved_gib", "eval_peak_gpu_memory_gib",
                  "eval_peak_gpu_reserved_gib", "peak_host_rss_gib")
SHARED_FLAG = "--allow-shared-timings"


def shared_device(df: pd.DataFrame) -> pd.Series:
    """True for runs that shared their GPU with another job; a record without `device_share`
    (older ones) counts as alone."""
    return numeric(df, "jobs_on_device_max") > 1


def without_shared_timings(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The runs with the time and memory of shared-device runs blanked (every table and ratio
    then treats them as not recorded), and the line that says so (None when no run shared)."""
    shared = shared_device(df)
    if not shared.any():
        return df, None
    out = df.copy()
    for metric in TIMING_METRICS:
        if metric in out.columns:
            out[metric] = numeric(out, metric).where(~shared)
    return out, (f"note: {int(shared.sum())} of {len(df)} runs shared their GPU with other jobs "
                 f"(device_share.jobs_on_device_max > 1): their time and memory are left out of every "
                 f"table, ratio and plot; {SHARED_FLAG} keeps them")


def on_gpu(df: pd.DataFrame) -> pd.Series:
    """Runs that trained on a GPU: the record's device name (env.device_name), or, for records
    without one, a recorded peak GPU memory."""
    device = df["device"] if "device" in df.columns else pd.Series(None, index=df.index, dtype=object)
    named = device.notna()
    return (named & (device.astype(str) != "cpu")) | (~named & numeric(df, "peak_gpu_memory_gib").notna())
