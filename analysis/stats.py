"""Intervals and paired tests between methods, over the same questions and over seeds.

- Over seeds: mean ± sample std, n, and the t interval of the mean (Student; n >= 2).
- A method against a baseline on the same questions (one seed): the difference of accuracies,
  McNemar's exact test (the two-sided binomial test of the discordant pairs: questions one got
  right and the other wrong; Agresti, "Categorical Data Analysis", 3rd ed. 2013, section 11.1.4)
  and a paired bootstrap interval (questions resampled with both verdicts kept together;
  Efron & Tibshirani 1993, ch. 13 percentile interval).
- Over seeds (seed s of the method paired with seed s of the baseline): the difference is the
  mean over seeds of the per-seed differences; its interval is a bootstrap stratified by seed
  (each replicate resamples the questions within every seed, then averages the seeds), and its
  p-value is the exact McNemar test on the discordant pairs pooled over seeds. Pooling is the
  conditional test for matched pairs in strata: under "no difference" every discordant pair is
  a fair coin whichever stratum it is in, so their total is Binomial(b + c, 1/2) (Agresti 2013,
  section 11.3, the Mantel-Haenszel / conditional logistic view of stratified matched pairs).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

N_BOOTSTRAP = 10_000  # our choice: the percentile interval's ends move by < 0.1 point between seeds of the resampling
BOOTSTRAP_SEED = 0    # our choice: the same records give the same interval
LEVEL = 0.95


def mean_interval(values: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """mean, std (ddof=1), n and the t interval of the mean [lo, hi]; std and the interval are
    NaN below two values (one seed says nothing about the spread over seeds)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n >= 2 else math.nan
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)) if n >= 2 else math.nan
    return {"mean": mean, "std": std, "n": n, "lo": mean - half, "hi": mean + half}


def mcnemar_exact_p(method_only: int, baseline_only: int) -> float:
    """Two-sided exact McNemar p: `method_only` questions the method got right and the baseline
    wrong, `baseline_only` the reverse. 1.0 when they never disagree."""
    discordant = method_only + baseline_only
    if discordant == 0:
        return 1.0
    tail = scipy_stats.binom.cdf(min(method_only, baseline_only), discordant, 0.5)
    return float(min(1.0, 2 * tail))


def discordant_counts(method: np.ndarray, baseline: np.ndarray) -> tuple[int, int]:
    method, baseline = np.asarray(method, dtype=bool), np.asarray(baseline, dtype=bool)
    return int((method & ~baseline).sum()), int((~method & baseline).sum())


def stratified_bootstrap_interval(differences: Sequence[np.ndarray], level: float = LEVEL,
                                  n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> list[float]:
    """Percentile interval of the mean over strata (seeds) of each stratum's mean per-question
    difference. Replicate r draws, for stratum 0, 1, ... in order, `len(stratum)` indices with
    `numpy.random.default_rng(seed).integers(0, len(stratum), size=(n_boot, len(stratum)))`."""
    rng = np.random.default_rng(seed)
    replicate_means = np.zeros(n_boot)
    for stratum in differences:
        stratum = np.asarray(stratum, dtype=float)
        picks = rng.integers(0, len(stratum), size=(n_boot, len(stratum)))
        replicate_means += stratum[picks].mean(axis=1)
    replicate_means /= len(differences)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(replicate_means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def paired_comparison(pairs: Sequence[tuple[np.ndarray, np.ndarray]], level: float = LEVEL,
                      n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """(method verdicts, baseline verdicts) per seed, each over the same questions in the same
    order -> difference (mean over seeds, as a proportion), its stratified bootstrap interval,
    the pooled exact McNemar p, the discordant counts, the seeds and the questions per seed."""
    if not pairs:
        raise ValueError("paired_comparison needs at least one (method, baseline) pair of verdicts")
    differences, method_only, baseline_only = [], 0, 0
    for method, baseline in pairs:
        if len(method) != len(baseline) or len(method) == 0:
            raise ValueError(f"paired verdicts must be non-empty and of equal length, got {len(method)} and {len(baseline)}")
        differences.append(np.asarray(method, dtype=float) - np.asarray(baseline, dtype=float))
        b, c = discordant_counts(method, baseline)
        method_only, baseline_only = method_only + b, baseline_only + c
    lo, hi = stratified_bootstrap_interval(differences, level, n_boot, seed)
    return {"difference": float(np.mean([d.mean() for d in differences])), "lo": lo, "hi": hi,
            "p": mcnemar_exact_p(method_only, baseline_only), "method_only": method_only,
            "baseline_only": baseline_only, "seeds": len(pairs), "questions": [len(d) for d in differences]}


def excludes_zero(lo: float, hi: float) -> bool:
    return not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)


def paired_seed_deltas(method: dict, baseline: dict, level: float = LEVEL) -> dict[str, float]:
    """{seed: value} of a method and of the baseline (memory, time) -> the mean of the per-seed
    differences with its t interval, and both as % of the baseline's mean (the tables' Δ %)."""
    seeds = sorted(set(method) & set(baseline))
    deltas = mean_interval([method[s] - baseline[s] for s in seeds], level)
    base = float(np.mean([baseline[s] for s in seeds])) if seeds else math.nan
    scale = 100 / base if base else math.nan
    return {**deltas, "pct": deltas["mean"] * scale, "pct_lo": deltas["lo"] * scale, "pct_hi": deltas["hi"] * scale}
