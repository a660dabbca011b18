"""methods/adagradselect.py: epsilon schedule, explore only in epoch 1, Dirichlet exploitation, counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from block_harness import run_steps, tiny_run
from methods.adagradselect import dirichlet_top_k
from method_helpers import method_knobs


def test_epsilon_follows_its_schedule_and_is_zero_after_epoch_one():
    run = tiny_run("adagradselect", "method.epsilon0=0.4", "method.epsilon_decay=null", "method.epsilon_end_ratio=0.1")
    m = run.method
    spe = run.ctx.steps_per_epoch
    lam = math.log(10) / spe
    for t in (0, 1, 7, spe - 1):
        assert m.epsilon(t) == pytest.approx(0.4 * math.exp(-lam * t), rel=1e-12)
    assert m.epsilon(spe - 1) == pytest.approx(0.04 * math.exp(lam), rel=1e-12)
    assert m.epsilon(spe) == m.epsilon(spe + 50) == 0.0
    fixed = tiny_run("adagradselect", "method.epsilon_decay=0.5").method
    assert fixed.epsilon(3) == pytest.approx(0.3 * math.exp(-1.5), rel=1e-12)


def test_explores_only_in_epoch_one_and_keeps_the_invariants():
    # batch 256 of the ~700 training examples: 2 steps per epoch; eps0=1, lambda=0: every epoch-1 step explores
    run = tiny_run("adagradselect", "method.epsilon0=1.0", "method.epsilon_decay=0.0", "method.policy=offload",
                   batch_size=256)
    spe = run.ctx.steps_per_epoch
    assert spe == 2
    run_steps(run, 8, expected_active=1)
    assert [h["explore"] for h in run.history] == [1] * spe + [0] * (8 - spe)
    assert [h["measured"] for h in run.history] == [h["explore"] for h in run.history]
    counts = np.zeros(4, dtype=int)
    for h in run.history:
        counts[h["active"]] += 1
    assert run.method.counts.tolist() == counts.tolist()


def test_k_percent_sets_the_active_count():
    run = tiny_run("adagradselect", "method.k_percent=75")
    run_steps(run, 3, expected_active=3)


def test_exploit_frequencies_follow_the_dirichlet_model():
    """P(block b in the top-k of pi), pi ~ Dirichlet(counts + delta): the method's 20,000 draws
    against 200,000 reference draws from torch's gamma sampler (Dirichlet = normalised gammas).
    Tolerance: 5 standard errors of the difference of two binomial frequencies (about 0.015 at
    p=0.5); a false alarm has probability < 1e-5 per block."""
    counts, delta, k = np.array([6, 0, 2, 12, 1]), 1.0, 2
    rng = np.random.default_rng(123)
    n, m = 20_000, 200_000
    observed = np.zeros(5)
    for _ in range(n):
        observed[dirichlet_top_k(counts, delta, k, rng)] += 1
    observed /= n
    gen = torch.Generator().manual_seed(7)
    alpha = torch.tensor(counts + delta, dtype=torch.float64)
    gammas = torch._standard_gamma(alpha.expand(m, 5).contiguous(), generator=gen)
    top = torch.topk(gammas, k, dim=1).indices
    expected = torch.bincount(top.flatten(), minlength=5).double().numpy() / m
    tolerance = 5 * np.sqrt(expected * (1 - expected) * (1 / n + 1 / m))
    assert np.all(np.abs(observed - expected) <= tolerance), (observed, expected, tolerance)
    assert np.abs(observed - k / 5).max() > 0.2  # far from uniform: the test can tell models apart


def test_exploit_uses_the_methods_counts():
    run = tiny_run("adagradselect")
    m = run.method
    m.counts = np.array([0, 0, 500, 0])
    picks = [m.choose(run.ctx.steps_per_epoch + s)[0] for s in range(200)]  # epoch 2: exploit only
    assert picks.count(2) > 190


def test_counts_and_rng_survive_a_state_dict_round_trip():
    run = tiny_run("adagradselect", "method.policy=offload")
    run_steps(run, 4)
    saved = run.method.state_dict()
    ahead = [run.method.choose(100 + s) for s in range(10)]
    fresh = tiny_run("adagradselect", "method.policy=offload")
    fresh.method.load_state_dict(saved)
    assert fresh.method.counts.tolist() == [int(c) for c in saved["counts"]] and sum(saved["counts"]) == 4
    assert [fresh.method.choose(100 + s) for s in range(10)] == ahead


def test_bad_knobs_are_named():
    from methods.adagradselect import AdaGradSelect
    with pytest.raises(ValueError, match="method.delta must be > 0"):
        AdaGradSelect(**method_knobs("adagradselect", delta=0))
    with pytest.raises(ValueError, match=r"method.epsilon0 must be in \[0, 1\], got 1.5"):
        AdaGradSelect(**method_knobs("adagradselect", epsilon0=1.5))


@pytest.mark.parametrize("count_updates", ["all", "explore"])
def test_count_updates_counts_every_update_or_explore_picks_only(count_updates):
    run = tiny_run("adagradselect", "method.epsilon0=0.5", "method.epsilon_decay=0.0",
                   f"method.count_updates={count_updates}")
    run_steps(run, 8, expected_active=1)
    explores = [h["explore"] for h in run.history]
    assert 0 < sum(explores) < len(explores)  # both kinds of step happened (seeded)
    counts = np.zeros(4, dtype=int)
    for h in run.history:
        if count_updates == "all" or h["explore"]:
            counts[h["active"]] += 1
    assert run.method.counts.tolist() == counts.tolist()
    assert counts.sum() == (8 if count_updates == "all" else sum(explores))


def test_bad_count_updates_is_named():
    from methods.adagradselect import AdaGradSelect
    with pytest.raises(ValueError, match="method.count_updates='exploit'; allowed: all, explore"):
        AdaGradSelect(**method_knobs("adagradselect", count_updates="exploit"))
