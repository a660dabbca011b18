"""bench/records/stats.py: Wilson intervals per eval set and metric, from hand-built verdicts."""
from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest, norm

from bench.records.stats import Z_95, accuracy_intervals, mean_of_proportions_interval, wilson_interval, with_intervals


def test_the_normal_quantile_is_scipys():
    assert Z_95 == pytest.approx(norm.ppf(0.975), abs=1e-12)


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (142, 180), (26, 1319)])
def test_wilson_equals_the_formula_and_scipy(k, n):
    lo, hi = wilson_interval(k, n)
    # Wilson (1927), written out: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    p, z = k / n, norm.ppf(0.975)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert lo == pytest.approx(max(0.0, centre - half), abs=1e-9)
    assert hi == pytest.approx(min(1.0, centre + half), abs=1e-9)
    reference = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((reference.low, reference.high), abs=1e-9)


def test_no_trial_gives_no_interval():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _samples():
    """Set a: 3 of 4 right (flexible), 1 of 4 strict; set b: 1 of 2."""
    a = [{"eval_set": "a", "id": str(i), "flexible": f, "strict": s, "extracted": "1"}
         for i, (f, s) in enumerate([(True, True), (True, False), (True, False), (False, False)])]
    b = [{"eval_set": "b", "id": "0", "flexible": True}, {"eval_set": "b", "id": "1", "flexible": False}]
    return a + b


def test_accuracy_intervals_per_set_and_metric():
    intervals = accuracy_intervals(_samples(), ["flexible", "strict"])
    assert intervals["a"]["flexible"] == pytest.approx(wilson_interval(3, 4), abs=1e-12)
    assert intervals["a"]["strict"] == pytest.approx(wilson_interval(1, 4), abs=1e-12)
    assert intervals["b"] == {"flexible": pytest.approx(wilson_interval(1, 2), abs=1e-12)}  # b has no strict


def test_with_intervals_adds_the_primary_and_each_sets_interval():
    metrics = {"accuracy": (0.75 + 0.5) / 2, "primary_metric": "flexible",
               "accuracy_by_task": {"a": {"flexible": 0.75, "strict": 0.25, "n": 4}, "b": {"flexible": 0.5, "n": 2}}}
    out = with_intervals(metrics, _samples())
    assert "accuracy_ci95" not in metrics and "flexible_ci95" not in metrics["accuracy_by_task"]["a"]
    assert out["accuracy_by_task"]["a"]["strict_ci95"] == pytest.approx(wilson_interval(1, 4), abs=1e-12)
    assert out["accuracy_by_task"]["a"]["n"] == 4
    # MOVER (Zou & Donner 2008) for the mean of the two sets, by hand:
    (la, ua), (lb, ub) = wilson_interval(3, 4), wilson_interval(1, 2)
    lo = 0.625 - math.sqrt((0.75 - la) ** 2 + (0.5 - lb) ** 2) / 2
    hi = 0.625 + math.sqrt((ua - 0.75) ** 2 + (ub - 0.5) ** 2) / 2
    assert out["accuracy_ci95"] == pytest.approx([lo, hi], abs=1e-12)


def test_one_set_the_primary_interval_is_wilsons():
    samples = [{"eval_set": "arithmetic", "id": str(i), "exact_match": i < 7} for i in range(10)]
    out = with_intervals({"accuracy": 0.7, "primary_metric": "exact_match",
                          "accuracy_by_task": {"arithmetic": {"exact_match": 0.7, "n": 10}}}, samples)
    assert out["accuracy_ci95"] == pytest.approx(wilson_interval(7, 10), abs=1e-12)
    assert mean_of_proportions_interval([0.7], [wilson_interval(7, 10)]) == pytest.approx(wilson_interval(7, 10), abs=1e-12)


def test_the_interval_of_an_all_wrong_or_all_right_set_stays_in_0_1():
    """With 0 of 3 right, Wilson's lower bound is a hair above 0 in floating point; the mean's
    interval rebuilt from it must not dip below 0 (a GPU run printed -5.6e-17)."""
    from bench.records.stats import mean_of_proportions_interval, wilson_interval

    for right in (0, 3):
        lo, hi = mean_of_proportions_interval([right / 3], [wilson_interval(right, 3)])
        assert 0.0 <= lo <= right / 3 <= hi <= 1.0
