"""analysis/stats.py: t intervals over seeds, exact McNemar, paired and seed-stratified bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, t

from analysis.stats import (bootstrap_p, excludes_zero, hierarchical_bootstrap, mcnemar_exact_p, mean_interval,
                            paired_comparison, paired_seed_deltas, percentile_interval)


def test_mean_interval_is_students():
    values = [0.61, 0.64, 0.70]
    out = mean_interval(values)
    mean, std = sum(values) / 3, math.sqrt(sum((v - sum(values) / 3) ** 2 for v in values) / 2)
    half = t.ppf(0.975, 2) * std / math.sqrt(3)
    assert (out["mean"], out["std"], out["n"]) == (pytest.approx(mean, abs=1e-12), pytest.approx(std, abs=1e-12), 3)
    assert (out["lo"], out["hi"]) == (pytest.approx(mean - half, abs=1e-9), pytest.approx(mean + half, abs=1e-9))
    one = mean_interval([0.5])
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["lo"])


@pytest.mark.parametrize("b, c", [(0, 0), (5, 5), (12, 3), (0, 9), (40, 61), (1, 30)])
def test_mcnemar_exact_p_equals_scipys_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, abs=1e-9)


def _verdicts(right: int, n: int) -> np.ndarray:
    return np.arange(n) < right


def test_one_seed_paired_test_on_known_verdicts():
    # 100 questions: both right on 50, method only on 15, baseline only on 3, both wrong on 32.
    base = np.array([True] * 50 + [False] * 15 + [True] * 3 + [False] * 32)
    method = np.array([True] * 50 + [True] * 15 + [False] * 3 + [False] * 32)
    out = paired_comparison([(method, base)])
    assert out["difference"] == pytest.approx(0.12, abs=1e-12)
    assert (out["method_only"], out["baseline_only"]) == (15, 3)
    assert out["p_mcnemar"] == pytest.approx(binomtest(3, 18, 0.5).pvalue, abs=1e-9) and out["p"] < 0.05
    assert excludes_zero(out["lo"], out["hi"]) and out["lo"] < 0.12 < out["hi"]
    # The percentile interval is close to the normal one for the mean of the per-question differences.
    d = method.astype(float) - base
    se = d.std(ddof=0) / math.sqrt(len(d))
    assert out["lo"] == pytest.approx(0.12 - 1.96 * se, abs=0.01) and out["hi"] == pytest.approx(0.12 + 1.96 * se, abs=0.01)


def test_a_difference_inside_the_noise_is_not_marked():
    base = np.array([True] * 40 + [True] * 6 + [False] * 5 + [False] * 49)
    method = np.array([True] * 40 + [False] * 6 + [True] * 5 + [False] * 49)
    out = paired_comparison([(method, base)])
    assert out["p"] > 0.5 and not excludes_zero(out["lo"], out["hi"])


def test_the_interval_covers_seed_to_seed_variance():
    # Seed 0: every question +1 (method right, baseline wrong); seed 1: no question differs. A
    # bootstrap within seeds only would give exactly [0.5, 0.5]; drawing the seeds too gives
    # replicates of 0, 0.5 and 1 (both slots seed 1, one of each, both seed 0).
    pairs = [(_verdicts(20, 20), _verdicts(0, 20)), (_verdicts(7, 20), _verdicts(7, 20))]
    out = paired_comparison(pairs)
    assert out["difference"] == 0.5 and (out["lo"], out["hi"]) == (0.0, 1.0)
    assert out["p_mcnemar"] == pytest.approx(2 * 0.5 ** 20, abs=1e-12)  # 20 discordant pairs, all one way
    assert not out["enough_seeds"]
    replicates = hierarchical_bootstrap([np.ones(20), np.zeros(20)])
    assert set(np.unique(replicates)) == {0.0, 0.5, 1.0}
    assert np.mean(replicates == 0.5) == pytest.approx(0.5, abs=0.02)  # one slot each: 2 of 4 draws
    assert out["p"] == bootstrap_p(replicates) == pytest.approx(2 * (1 + np.sum(replicates <= 0)) / (1 + len(replicates)))


def test_one_seed_is_the_question_bootstrap_and_the_draws_are_fixed():
    rng = np.random.default_rng(0)
    d = rng.integers(-1, 2, size=300).astype(float)
    replicates = hierarchical_bootstrap([d], n_boot=4000)
    assert replicates.std() == pytest.approx(d.std() / np.sqrt(len(d)), rel=0.05)
    assert np.array_equal(replicates, hierarchical_bootstrap([d], n_boot=4000))  # a fixed seed: same records, same interval
    lo, hi = percentile_interval(replicates)
    assert lo < d.mean() < hi


def test_pooled_p_is_the_binomial_of_all_discordant_pairs():
    seed0 = (np.array([1, 1, 0, 1, 0, 1], bool), np.array([0, 1, 0, 0, 1, 1], bool))  # b=2, c=1
    seed1 = (np.array([1, 0, 1, 1], bool), np.array([0, 0, 0, 1], bool))              # b=2, c=0
    out = paired_comparison([seed0, seed1])
    assert (out["method_only"], out["baseline_only"], out["seeds"], out["questions"]) == (4, 1, 2, [6, 4])
    assert out["p_mcnemar"] == pytest.approx(binomtest(1, 5, 0.5).pvalue, abs=1e-9)
    assert out["difference"] == pytest.approx((1 / 6 + 2 / 4) / 2, abs=1e-12)


def test_unequal_verdict_lists_are_refused():
    with pytest.raises(ValueError, match="equal length, got 3 and 2"):
        paired_comparison([(np.ones(3, bool), np.ones(2, bool))])


def test_memory_deltas_pair_seeds_and_carry_a_t_interval():
    out = paired_seed_deltas({0: 7.0, 1: 8.0, 2: 9.5, 5: 1.0}, {0: 10.0, 1: 12.0, 2: 14.0})
    deltas = [-3.0, -4.0, -4.5]
    mean, std = np.mean(deltas), np.std(deltas, ddof=1)
    half = t.ppf(0.975, 2) * std / math.sqrt(3)
    assert out["n"] == 3 and out["mean"] == pytest.approx(mean, abs=1e-12)
    assert (out["lo"], out["hi"]) == (pytest.approx(mean - half, abs=1e-9), pytest.approx(mean + half, abs=1e-9))
    assert out["pct"] == pytest.approx(100 * mean / 12.0, abs=1e-9)
    assert out["pct_lo"] == pytest.approx(100 * (mean - half) / 12.0, abs=1e-9)
