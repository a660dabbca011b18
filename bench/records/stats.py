"""95% intervals for a run's accuracies, from its per-question verdicts (samples.jsonl).

Pure functions on verdict lists: the run calls `with_intervals` on its metrics after evaluation,
and the analysis calls it for records written before the run did (their samples.jsonl is beside
result.json). lm-evaluation-harness prints a standard error per metric; we give a Wilson score
interval instead, which stays inside [0, 1] and keeps its coverage near 0% and 100% where the
normal (Wald) interval collapses to zero width (Brown, Cai & DasGupta 2001, "Interval Estimation
for a Binomial Proportion", Statistical Science 16(2), section 4.1).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
CI_SUFFIX = "_ci95"


def wilson_interval(successes: int, n: int, z: float = Z_95) -> list[float]:
    """[lo, hi] of the Wilson score interval (Wilson 1927) for `successes` out of `n`;
    [nan, nan] when there is no trial."""
    if n <= 0:
        return [math.nan, math.nan]
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def accuracy_intervals(samples: Iterable[dict], metric_names: Iterable[str]) -> dict[str, dict[str, list[float]]]:
    """{eval_set: {metric: [lo, hi]}} from samples.jsonl records (`eval_set` and a truthy or
    falsy verdict per metric in each); a metric a set's samples do not carry is left out."""
    names = list(metric_names)
    counts: dict[str, dict[str, list[int]]] = {}
    for sample in samples:
        per_set = counts.setdefault(sample["eval_set"], {})
        for metric in names:
            if metric in sample:
                tally = per_set.setdefault(metric, [0, 0])
                tally[0] += bool(sample[metric])
                tally[1] += 1
    return {set_name: {m: wilson_interval(k, n) for m, (k, n) in per_set.items()}
            for set_name, per_set in counts.items()}


def mean_of_proportions_interval(points: list[float], intervals: list[list[float]]) -> list[float]:
    """The interval of the unweighted mean of independent proportions (the primary `accuracy` of a
    task with several eval sets), by MOVER: recovering each one's variance from its own interval
    (Zou & Donner 2008, "Construction of confidence limits about effect measures: a general
    approach", Statistics in Medicine 27(10), eq. 5). With one set it is that set's interval."""
    k = len(points)
    if k == 0 or any(math.isnan(v) for iv in intervals for v in iv):
        return [math.nan, math.nan]
    mean = sum(points) / k
    below = math.sqrt(sum((p - lo) ** 2 for p, (lo, _) in zip(points, intervals))) / k
    above = math.sqrt(sum((hi - p) ** 2 for p, (_, hi) in zip(points, intervals))) / k
    # A mean of proportions lies in [0, 1]: rounding (p - lo with lo a hair above 0) must not leave it.
    return [max(0.0, mean - below), min(1.0, mean + above)]


def with_intervals(metrics: dict, samples: list[dict]) -> dict:
    """`metrics` (result.json's) plus `accuracy_ci95` (the primary accuracy's) and, per eval set,
    `<metric>_ci95` beside each accuracy in `accuracy_by_task`. A copy; the input is unchanged."""
    by_task = metrics.get("accuracy_by_task") or {}
    names = {m for scores in by_task.values() for m in scores if m != "n" and not m.endswith(CI_SUFFIX)}
    intervals = accuracy_intervals(samples, names)
    out = dict(metrics)
    out["accuracy_by_task"] = {
        set_name: {**scores, **{f"{m}{CI_SUFFIX}": iv for m, iv in intervals.get(set_name, {}).items()}}
        for set_name, scores in by_task.items()}
    primary = metrics.get("primary_metric")
    sets = [s for s in by_task if primary in intervals.get(s, {})]
    if primary is not None and sets and len(sets) == len(by_task):
        out["accuracy_ci95"] = mean_of_proportions_interval(
            [by_task[s][primary] for s in sets], [intervals[s][primary] for s in sets])
    return out
