"""methods/adagradselect.py: epsilon schedule, explore only in epoch 1, Dirichlet exploitation, the
`focus` rule (spread in epoch 1, concentrated on the blocks most often in the gradient-norm top-k
later) and the `update_counts` rule before it, counts and their state."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analysis.selection import adagradselect_summary
from block_harness import run_steps, tiny_run
from methods.adagradselect import RNG_SALT, AdaGradSelect, dirichlet_top_k
from methods.blocks import MEASURE, numpy_rng

# SmolLM2-135M-Instruct's per-layer gradient norms at its first full fine-tuning step on GSM8K
# (CPU, batch 4 x 256 tokens, fp32): the simulation's block means. Over its first 5 steps the
# per-block log-norm varied with sd ~0.12 around the step's overall scale.
SMOLLM2_NORMS = [1.55, 1.26, 1.28, 0.9, 0.84, 1.17, 0.96, 0.87, 0.94, 0.83, 0.79, 1.67, 1.08, 0.98, 1.01, 0.81,
                 0.97, 1.0, 0.87, 1.29, 0.76, 0.57, 0.64, 0.58, 0.41, 0.4, 0.35, 0.48, 0.39, 1.17]


def knobs(**overrides) -> dict:
    """The yaml's knobs (conf/method/adagradselect.yaml), for constructing the method directly."""
    return {"k_percent": 25, "epsilon0": 0.3, "epsilon_decay": None, "epsilon_end_ratio": 0.05, "delta": 1.0,
            "rule": "focus", "focus_growth": 100, "policy": "keep", "non_layer": None,
            "measure_checkpointing": True, **overrides}


def simulate(method: AdaGradSelect, means, steps_per_epoch: int, epochs: int, k: int, seed: int,
             noise_sd: float) -> list[dict]:
    """The method's own choose/chosen/step_metrics over `epochs`, its measuring steps played with
    synthetic norms (means x lognormal noise per block x one factor per step); one metrics row per
    step, as a run writes them."""
    means = np.asarray(means, dtype=float)
    noise = np.random.default_rng([seed, 77])
    method.start(len(means), k, steps_per_epoch, seed)
    rows = []
    for t in range(steps_per_epoch * epochs):
        method._step = t
        choice = method.choose(t)
        method._measuring = choice is MEASURE
        if choice is MEASURE:
            norms = means * np.exp(noise.normal(0, noise_sd, len(means))) * math.exp(noise.normal(0, 0.3))
            method.last_norms = torch.tensor(norms, dtype=torch.float32)
            choice = torch.argsort(method.last_norms, descending=True, stable=True)[:k].tolist()
        method._chosen = sorted(choice)
        method.chosen(t, method._chosen)
        rows.append({"step": t + 1, **method.step_metrics()})
    return rows


def test_focus_on_the_smollm2_shape_trains_many_blocks_early_and_the_top_blocks_late():
    """30 blocks, k=8, 76 steps/epoch, 3 epochs, eps0=0.3 falling over epoch 1 (the GPU protocol's
    shape), 40 seeds: focus trains >= 2k blocks in epoch 1 and ends on a set that overlaps the
    top-k by mean explore-step norm by >= 0.75 in every seed; the rule before collapses onto one set
    whose overlap is far lower on average (so the thresholds can tell the rules apart)."""
    focus, before = [], []
    for seed in range(40):
        focus.append(adagradselect_summary(simulate(AdaGradSelect(**knobs()), SMOLLM2_NORMS, 76, 3, 8, seed, 0.15), 76, 8))
        rows = simulate(AdaGradSelect(**knobs(rule="update_counts")), SMOLLM2_NORMS, 76, 3, 8, seed, 0.15)
        before.append(adagradselect_summary(rows, 76, 8))
        sets = [tuple(r["active_block_ids"]) for r in rows[76:]]
        assert max(sets.count(x) for x in set(sets)) >= 0.9 * len(sets)  # (nearly) one set from epoch 2 on
    assert min(s["distinct_blocks_epoch1"] for s in focus) >= 16
    assert min(s["final_overlap_with_grad_topk"] for s in focus) >= 0.75
    assert np.mean([s["final_overlap_with_grad_topk"] for s in focus]) >= 0.9
    assert np.mean([s["final_overlap_with_grad_topk"] for s in before]) <= 0.75


def test_focus_concentrates_on_the_blocks_most_often_in_the_top_k():
    """Deterministic norms: blocks 0..3 always lead, so every explore step picks them; from epoch 3
    on every step trains exactly those, while epoch 1 still trains blocks never picked."""
    means = [8.0, 7.0, 6.0, 5.0] + [1.0] * 12
    rows = simulate(AdaGradSelect(**knobs(epsilon0=0.5)), means, 30, 3, 4, seed=1, noise_sd=0.0)
    assert sum(r["explore"] for r in rows) >= 3
    assert all(r["block_grad_norms"] is not None and len(r["block_grad_norms"]) == 16 for r in rows if r["explore"])
    assert len({b for r in rows[:30] for b in r["active_block_ids"]}) >= 8
    assert all(r["active_block_ids"] == [0, 1, 2, 3] for r in rows[60:])
    assert [r["concentration"] for r in rows[:30]] == [1.0] * 30 and rows[-1]["concentration"] > 1e3


def test_ties_in_the_counts_go_to_the_larger_summed_norm():
    """Blocks 2 and 3 are equally often in the top-k; block 3's norms are larger, so late in the run
    (high concentration) block 3 wins the last place every step."""
    m = AdaGradSelect(**knobs())
    m.start(6, 3, 10, seed=0)
    m.counts = np.array([5, 5, 2, 2, 0, 0])
    m.norm_sums = np.array([9.0, 8.0, 2.0, 2.5, 1.0, 1.0])
    picks = [m.choose(29) for _ in range(50)]  # epoch 3: exploit only, weight 100**1.9
    assert all(sorted(p) == [0, 1, 3] for p in picks)


def test_update_counts_reproduces_the_rule_before():
    """rule=update_counts on the real loop replays the old rule step for step: one uniform draw per
    step against eps_t, explore = the measured top-k, exploit = top-k of Dirichlet(counts + delta),
    counts grown by every step's blocks."""
    run = tiny_run("adagradselect", "method.rule=update_counts", "method.epsilon0=0.5", "method.epsilon_decay=0.1",
                   "train.grad_accum=1", layers=6, batch_size=64, total_steps=24)
    run_steps(run, 24, expected_active=2)
    m, rng = run.method, numpy_rng(0, RNG_SALT)
    counts = np.zeros(6, dtype=np.int64)
    for t, row in enumerate(run.history):
        explore = bool(rng.random() < m.epsilon(t))
        assert row["explore"] == int(explore)
        if not explore:
            pi = rng.dirichlet(counts + 1.0)
            assert row["active"] == sorted(np.argsort(-pi, kind="stable")[:2].tolist()), t
        counts[row["active"]] += 1
    assert 0 < sum(r["explore"] for r in run.history) < 24
    assert m.counts.tolist() == counts.tolist()


def test_a_tiny_model_over_three_epochs_explores_then_focuses():
    """A real run (random-init tiny llama, 16 layers, k = 4, 3 epochs of 11 steps, the real loop):
    >= 2k distinct blocks in epoch 1, and the last step's set is the top-k by mean explore-step
    gradient norm (from the rows the run logged, read by analysis/selection.py)."""
    run = tiny_run("adagradselect", "method.epsilon0=0.6", "train.grad_accum=1", "train.epochs=3",
                   "train.max_steps=null", layers=16, batch_size=64, seed=1)
    spe, k = run.ctx.steps_per_epoch, run.method.k
    assert spe == 11 and k == 4 and run.total_steps == 33
    run.train()
    assert len(run.history) == 33 and all(len(r["active_block_ids"]) == k for r in run.history)
    summary = adagradselect_summary(run.history, spe, k)
    assert sum(r["explore"] for r in run.history) >= 2 and all(r["explore"] == 0 for r in run.history[spe:])
    assert summary["distinct_blocks_epoch1"] >= 2 * k
    assert summary["final_overlap_with_grad_topk"] >= 0.75


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
    for h in run.history[:spe]:  # focus: only the explore picks count
        counts[h["active"]] += 1
    assert run.method.counts.tolist() == counts.tolist()
    assert all(len(h["block_grad_norms"]) == 4 for h in run.history[:spe])
    assert all("block_grad_norms" not in h for h in run.history[spe:])


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


@pytest.mark.parametrize("rule", ["focus", "update_counts"])
def test_counts_sums_and_rng_survive_a_state_dict_round_trip(rule):
    run = tiny_run("adagradselect", "method.policy=offload", "method.epsilon0=0.5", "method.epsilon_decay=0.0",
                   f"method.rule={rule}")
    run_steps(run, 4)
    saved = run.method.state_dict()
    ahead = [run.method.choose(100 + s) for s in range(10)]
    fresh = tiny_run("adagradselect", "method.policy=offload", f"method.rule={rule}")
    fresh.method.load_state_dict(saved)
    assert fresh.method.counts.tolist() == [int(c) for c in saved["counts"]]
    assert fresh.method.norm_sums.tolist() == saved["norm_sums"]
    explores = sum(h["explore"] for h in run.history)
    assert sum(saved["counts"]) == (4 if rule == "update_counts" else explores)
    assert [fresh.method.choose(100 + s) for s in range(10)] == ahead


@pytest.mark.parametrize("rule", ["focus", "update_counts"])
def test_each_rule_counts_its_own_updates(rule):
    run = tiny_run("adagradselect", "method.epsilon0=0.5", "method.epsilon_decay=0.0", f"method.rule={rule}")
    run_steps(run, 8, expected_active=1)
    explores = [h["explore"] for h in run.history]
    assert 0 < sum(explores) < len(explores)  # both kinds of step happened (seeded)
    counts = np.zeros(4, dtype=int)
    for h in run.history:
        if rule == "update_counts" or h["explore"]:
            counts[h["active"]] += 1
    assert run.method.counts.tolist() == counts.tolist()
    assert counts.sum() == (8 if rule == "update_counts" else sum(explores))


@pytest.mark.parametrize("knob, value, message", [
    ("delta", 0, "method.delta must be > 0"),
    ("epsilon0", 1.5, r"method.epsilon0 must be in \[0, 1\], got 1.5"),
    ("rule", "all", "method.rule='all'; allowed: focus, update_counts"),
    ("focus_growth", 0.5, "method.focus_growth must be >= 1"),
])
def test_bad_knobs_are_named(knob, value, message):
    from bench.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        AdaGradSelect(**knobs(**{knob: value}))


def test_every_knob_is_required():
    with pytest.raises(TypeError):
        AdaGradSelect(k_percent=25, epsilon0=0.3, epsilon_decay=None, delta=1.0)
