"""methods/topk.py: k% blocks by gradient norm, re-selected every `select_every` steps or once."""
from __future__ import annotations

import pytest
import torch

from block_harness import run_steps, tiny_run
from method_helpers import method_knobs


@pytest.mark.parametrize("policy", ["drop", "offload"])
def test_reselects_the_top_k_blocks_by_measured_norm(policy):
    run = tiny_run("topk", "method.k_percent=50", "method.select_every=3", f"method.policy={policy}")
    norms_seen = []
    original = run.method.choose_from_norms

    def spy(step, norms):
        norms_seen.append((step, norms.clone()))
        return original(step, norms)

    run.method.choose_from_norms = spy
    run_steps(run, 7, expected_active=2)  # 50% of 4 layers
    assert [s for s, _ in norms_seen] == [0, 3, 6]
    assert [h["measured"] for h in run.history] == [1, 0, 0, 1, 0, 0, 1]
    for step, norms in norms_seen:
        assert run.history[step]["active"] == sorted(torch.topk(norms, 2).indices.tolist())
        assert (norms > 0).all()  # every block was measured: a full backward
    for h in run.history[1:3]:  # the set holds between selections
        assert h["active"] == run.history[0]["active"]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_measuring_streams_with_and_without_accumulation(grad_accum):
    """The measuring backward keeps k blocks' gradients as it goes, with one micro-batch or several
    (then the first micro-batch ranks: tests/test_measure_accumulation.py)."""
    run = tiny_run("topk", "method.k_percent=50", "method.select_every=3", f"train.grad_accum={grad_accum}")
    run_steps(run, 1, expected_active=2)
    assert run.method.meter.keep_top == 2


def test_select_every_zero_is_a_static_selection():
    run = tiny_run("topk", "method.select_every=0")
    run_steps(run, 6, expected_active=1)  # 25% of 4 layers
    assert [h["measured"] for h in run.history] == [1, 0, 0, 0, 0, 0]
    assert len({tuple(h["active"]) for h in run.history}) == 1


def test_state_dict_round_trip_restores_the_selection():
    run = tiny_run("topk", "method.select_every=0")
    run_steps(run, 2)
    saved = run.method.state_dict()
    fresh = tiny_run("topk", "method.select_every=0")
    fresh.method.load_state_dict(saved)
    assert fresh.method._chosen == run.method._chosen
    assert fresh.method.choose(2) == run.method._chosen  # no re-measurement after resume


def test_negative_select_every_is_named():
    from methods.topk import TopK
    with pytest.raises(ValueError, match="method.select_every must be >= 0"):
        TopK(**method_knobs("topk", select_every=-1))


@pytest.mark.parametrize("measure_checkpointing", [True, False])
def test_measuring_steps_checkpoint_and_give_the_same_choice(measure_checkpointing):
    """Checkpointing only the measuring step changes where activations live, not the gradients:
    the chosen blocks and the trained weights match a run without it; ordinary steps never checkpoint."""
    runs = {}
    for flag in (measure_checkpointing, not measure_checkpointing):
        run = tiny_run("topk", "method.k_percent=50", "method.select_every=2",
                       f"method.measure_checkpointing={str(flag).lower()}")
        seen = []  # per forward (one per step): was layer 0 checkpointing
        layers = run.method.layout.layers
        layers[0].register_forward_pre_hook(lambda module, args, seen=seen: seen.append(module.gradient_checkpointing))
        run_steps(run, 4, expected_active=2)
        assert seen == [flag, False, flag, False]  # steps 0 and 2 measured
        assert not any(layer.gradient_checkpointing for layer in layers)  # off again after each
        runs[flag] = run
    a, b = runs.values()
    assert [h["active"] for h in a.history] == [h["active"] for h in b.history]
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
