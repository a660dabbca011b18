"""Intervals and paired tests between methods, over the same questions and over seeds.

- Over seeds: mean ± sample std, n, and the t interval of the mean (Student; n >= 2).
- A method against a baseline on the same questions (one seed): the difference of accuracies,
  McNemar's exact test (the two-sided binomial test of the discordant pairs: questions one got
  right and the other wrong; Agresti, "Categorical Data Analysis", 3rd ed. 2013, section 11.1.4)
  and a paired bootstrap interval (questions resampled with both verdicts kept together;
  Efron & Tibshirani 1993, ch. 13 percentile interval).
- Over seeds (seed s of the method paired with seed s of the baseline): the difference is the
  mean over seeds of the per-seed differences. Its interval and p-value come from a hierarchical
  bootstrap, so they cover seed-to-seed variance as well as the questions' (Davison & Hinkley,
  "Bootstrap Methods and their Application", 1997, section 3.8, two-stage resampling; resampling
  both stages is their conservative choice): each replicate draws the seeds with replacement,
  then, within each drawn seed, the questions with replacement (both runs' verdicts on a question
  kept together), and averages. The interval is the percentile interval of the replicates; p is
  the two-sided bootstrap p, twice the share of replicates on the far side of 0 (p < 0.05 goes
  with a 95% interval that excludes 0). McNemar's exact test on the discordant pairs pooled over seeds
  is kept beside it (questions only: it ignores seed-to-seed variance).
- With fewer than `MIN_SEEDS` seeds nothing is called significant: two seeds cannot say how much
  the seeds differ (the bootstrap over two seeds sees one spread, the t interval has 1 df).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

N_BOOTSTRAP = 10_000  # our choice: the percentile interval's ends move by < 0.1 point between seeds of the resampling
BOOTSTRAP_SEED = 0    # our choice: the same records give the same interval
LEVEL = 0.95
MIN_SEEDS = 3  # our choice: fewer seeds mark nothing significant (module docstring)


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


def hierarchical_bootstrap(values: Sequence[np.ndarray], n_boot: int = N_BOOTSTRAP,
                           seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Replicates of the mean over seeds of each seed's mean value (a per-question difference, or
    a verdict). Replicate r draws S seeds with replacement, `numpy.random.default_rng(seed)
    .integers(0, S, size=(n_boot, S))`, then for slot j = 0, 1, ... and seed s = 0, 1, ... in
    order, the questions of seed s for the replicates that drew s into slot j: a resample of n
    questions with replacement is drawn as its counts of each distinct value,
    `rng.multinomial(n, shares)` (the same distribution, without n draws per replicate)."""
    strata = [np.asarray(v, dtype=float) for v in values]
    if not strata or any(len(v) == 0 for v in strata):
        raise ValueError("hierarchical_bootstrap needs at least one seed, each with at least one question")
    rng = np.random.default_rng(seed)
    n_seeds = len(strata)
    drawn = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    slot_means = np.zeros((n_boot, n_seeds))
    levels = [np.unique(v, return_counts=True) for v in strata]
    for slot in range(n_seeds):
        for s, (distinct, counts) in enumerate(levels):
            rows = drawn[:, slot] == s
            if rows.any():
                n = int(counts.sum())
                slot_means[rows, slot] = rng.multinomial(n, counts / n, size=int(rows.sum())) @ distinct / n
    return slot_means.mean(axis=1)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return [float(lo), float(hi)]


def bootstrap_p(replicates: np.ndarray) -> float:
    """Two-sided: twice the share of replicates at or beyond 0 on the side away from the estimate,
    counted as (1 + k) / (1 + B) (Davison & Hinkley 1997, section 4.2.1: a Monte Carlo p-value is
    never 0)."""
    n = len(replicates)
    below, above = (1 + int(np.sum(replicates <= 0))) / (1 + n), (1 + int(np.sum(replicates >= 0))) / (1 + n)
    return min(1.0, 2 * min(below, above))


def paired_comparison(pairs: Sequence[tuple[np.ndarray, np.ndarray]], level: float = LEVEL,
                      n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """(method verdicts, baseline verdicts) per seed, each over the same questions in the same
    order -> difference (mean over seeds, as a proportion), its hierarchical bootstrap interval
    and p (seeds and questions resampled), the pooled exact McNemar p (`p_mcnemar`), the
    discordant counts, the seeds, the questions per seed and whether the seeds are enough
    (`MIN_SEEDS`) for a verdict (`enough_seeds`)."""
    if not pairs:
        raise ValueError("paired_comparison needs at least one (method, baseline) pair of verdicts")
    differences, method_only, baseline_only = [], 0, 0
    for method, baseline in pairs:
        if len(method) != len(baseline) or len(method) == 0:
            raise ValueError(f"paired verdicts must be non-empty and of equal length, got {len(method)} and {len(baseline)}")
        differences.append(np.asarray(method, dtype=float) - np.asarray(baseline, dtype=float))
        b, c = discordant_counts(method, baseline)
        method_only, baseline_only = method_only + b, baseline_only + c
    replicates = hierarchical_bootstrap(differences, n_boot, seed)
    lo, hi = percentile_interval(replicates, level)
    return {"difference": float(np.mean([d.mean() for d in differences])), "lo": lo, "hi": hi,
            "p": bootstrap_p(replicates), "p_mcnemar": mcnemar_exact_p(method_only, baseline_only),
            "method_only": method_only, "baseline_only": baseline_only, "seeds": len(pairs),
            "questions": [len(d) for d in differences], "enough_seeds": len(pairs) >= MIN_SEEDS}


def mean_over_seeds(verdicts: Sequence[np.ndarray], level: float = LEVEL, n_boot: int = N_BOOTSTRAP,
                    seed: int = BOOTSTRAP_SEED) -> dict:
    """A method's accuracy: the mean over seeds of each seed's share of right answers, with the
    same hierarchical bootstrap interval as the paired differences."""
    replicates = hierarchical_bootstrap(verdicts, n_boot, seed)
    lo, hi = percentile_interval(replicates, level)
    return {"mean": float(np.mean([np.mean(v) for v in verdicts])), "lo": lo, "hi": hi, "seeds": len(verdicts)}


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
