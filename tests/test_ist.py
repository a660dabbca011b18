"""methods/ist.py: importance update vs the official formula, exact LoRA-scaling restore, sparsity."""
from __future__ import annotations

import math

import pytest
import torch
from peft.tuners.lora import LoraLayer

from block_harness import Check, run_steps, tiny_run

SMALL_LORA = ("method.lora.r=8", "method.lora.lora_alpha=16")


def test_score_update_equals_the_official_formula_on_scripted_losses():
    run = tiny_run("ist", *SMALL_LORA)
    m = run.method
    start = [0.3, -0.2, 0.1, 0.0]
    m.scores = torch.tensor(start)
    scripted = {(0, 1): 0.9, (0, 2): 0.4, (0, 3): 1.3, (1, 2): 0.7, (1, 3): 0.2, (2, 3): 1.1}
    m.rollout_loss = lambda model, suppressed, batch: scripted[tuple(suppressed)]
    m.update_importance(run.model)
    sets = m.last_update["sets"]
    assert len(sets) == 3 and len({tuple(s) for s in sets}) == 3 and all(len(s) == 2 for s in sets)
    rewards = [math.exp(-scripted[tuple(s)]) for s in sets]
    mean = sum(rewards) / 3
    p = [1 / (1 + math.exp(-s)) for s in start]
    expected = list(start)
    for reward, s in zip(rewards, sets):
        for i in s:
            expected[i] += (reward - mean) * p[i] * (1 - p[i]) * 10
    assert m.scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert m.scores.tolist() != pytest.approx(start, abs=1e-3)  # the update did something


def test_rollouts_suppress_the_chosen_layers_and_restore_scaling_exactly():
    run = tiny_run("ist", "method.lora.r=3", "method.lora.lora_alpha=7", "method.lora.use_rslora=true")
    m = run.method
    modules = [[mod for mod in layer.modules() if isinstance(mod, LoraLayer)] for layer in m.layout.layers]
    modules[1][0].scaling["default"] = 0.123456789  # per-module values must come back as they were
    original = [[dict(mod.scaling) for mod in layer] for layer in modules]
    seen = []
    for i, layer in enumerate(modules):
        layer[0].register_forward_pre_hook(lambda mod, args, i=i: seen.append((i, mod.scaling["default"])))
    m.update_importance(run.model)
    assert run.model.training
    assert [[dict(mod.scaling) for mod in layer] for layer in modules] == original
    assert len(seen) == 3 * 4  # 3 rollouts x 4 layers
    for k, suppressed in enumerate(m.last_update["sets"]):
        for i, value in seen[4 * k: 4 * k + 4]:
            factor = 0.25 if i in suppressed else 1.0
            assert value == original[i][0]["default"] * factor


@pytest.mark.parametrize("layers,per_step", [(4, 1), (8, 2)])
def test_a_quarter_of_the_layers_train_each_step(layers, per_step):
    run = tiny_run("ist", *SMALL_LORA, layers=layers)
    run_steps(run, 11, expected_active=per_step)
    assert [h["importance_updated"] for h in run.history] == [0] * 10 + [1]
    assert run.method.last_update is not None and run.method.scores.abs().sum() > 0
    assert len({tuple(h["active"]) for h in run.history}) > 1  # resampled every step


def test_works_on_phi3_with_fused_projections():
    run = tiny_run("ist", *SMALL_LORA, arch="phi3")
    names = {n for n, p in run.model.named_parameters() if p in set(run.method.layout.candidate_parameters())}
    assert any("qkv_proj.lora_A" in n for n in names) and any("gate_up_proj.lora_B" in n for n in names)
    run.method.update_interval = 2
    run_steps(run, 3, expected_active=1)


def test_low_scores_are_trained_more_often():
    m = tiny_run("ist", *SMALL_LORA).method
    m.scores = torch.tensor([4.0, -4.0, 4.0, -4.0])  # high score = suppressing it does not hurt
    picks = [m.choose(s)[0] for s in range(400)]
    assert sum(p in (1, 3) for p in picks) > 380


def test_scores_and_sampler_survive_a_state_dict_round_trip():
    run = tiny_run("ist", *SMALL_LORA)
    run.method.scores = torch.tensor([0.5, -1.0, 0.25, 2.0])
    saved = run.method.state_dict()
    ahead = [run.method.choose(s) for s in range(10)]
    fresh = tiny_run("ist", *SMALL_LORA)
    fresh.method.load_state_dict(saved)
    assert torch.equal(fresh.method.scores, saved["scores"])
    assert [fresh.method.choose(s) for s in range(10)] == ahead


def test_too_few_layers_for_distinct_rollouts_is_named():
    with pytest.raises(ValueError, match="method.rollouts=3 distinct suppression sets of 1 out of 2 layers"):
        tiny_run("ist", *SMALL_LORA, "method.update_fraction=0.5", layers=2)


def test_default_keeps_every_adapters_optimizer_state_in_place_and_ist_offload_moves_idle_ones():
    """The official code never touches the optimizer: once an adapter has Adam state, the same
    tensors stay in optimizer.state on the model's device, whether its layer trains or idles."""
    run = tiny_run("ist", *SMALL_LORA)
    assert run.method.policy == "keep"
    opt, blocks = run.state.optimizer, run.method.layout.blocks
    device = next(run.model.parameters()).device
    first_seen: dict = {}  # parameter -> its state tensors when they first appeared
    idle_with_state = 0

    def check(step, metrics):
        nonlocal idle_with_state
        for p, state in opt.state.items():
            tensors = {k: v for k, v in state.items() if torch.is_tensor(v) and v.ndim > 0}
            first_seen.setdefault(p, tensors)
            assert all(tensors[k] is t for k, t in first_seen[p].items())  # same objects, never replaced
            assert all(t.device == device for t in tensors.values())
        for p in first_seen:  # a state, once created, is never removed
            assert p in opt.state
        idle_with_state += sum(1 for i, b in enumerate(blocks) if i not in metrics["active_block_ids"]
                               and all(p in opt.state for p in b.params))

    run.train(until=8, observers=[Check(check)])
    assert idle_with_state > 0  # some idle layer held its state in place
    assert not run.method.activation.residency.offloaded

    offload = tiny_run("ist-offload", *SMALL_LORA)
    assert offload.method.policy == "offload"
    run_steps(offload, 8, expected_active=1)  # checks idle layers' state left the optimizer intact
    residency = offload.method.activation.residency
    assert residency.offloaded
    assert all(p not in offload.state.optimizer.state for p in residency.offloaded)
