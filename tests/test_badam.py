"""methods/badam.py: one block at a time, switched every K steps, optimizer state reset at switches."""
from __future__ import annotations

import pytest
import torch

from block_harness import run_steps, tiny_run
from method_helpers import method_knobs


def test_one_block_switching_descending_with_state_reset():
    run = tiny_run("badam", "method.switch_every=2")
    opt = run.state.optimizer
    run_steps(run, 6, expected_active=1)
    assert [h["active"] for h in run.history] == [[3], [3], [2], [2], [1], [1]]
    # after the last step only block 1's state exists: every switch forgot everything before it
    resident = {i for i, b in enumerate(run.method.layout.blocks) if any(p in opt.state for p in b.params)}
    assert resident == {1}
    step_counts = {float(opt.state[p]["step"]) for p in run.method.layout.blocks[1].params}
    assert step_counts == {2.0}  # the state restarted at the switch, not carried from earlier blocks


@pytest.mark.parametrize("mode,expected", [("ascending", [0, 1, 2, 3, 0]), ("fixed", [2] * 5)])
def test_switch_modes(mode, expected):
    run = tiny_run("badam", "method.switch_every=1", f"method.switch_mode={mode}", "method.fixed_block=2")
    assert picks(run.method, 5) == expected


def picks(method, n: int) -> list[int]:
    """The blocks chosen over n steps (choose + set, as on_step_start does, without training)."""
    out = []
    for s in range(n):
        choice = method.choose(s)
        method._set(s, choice)
        out.append(choice[0])
    return out


def test_random_mode_visits_every_block_once_per_pass_and_resumes():
    run = tiny_run("badam", "method.switch_every=1", "method.switch_mode=random")
    chosen = picks(run.method, 8)
    assert sorted(chosen[:4]) == sorted(chosen[4:]) == [0, 1, 2, 3]
    saved = run.method.state_dict()
    ahead = [run.method.choose(s) for s in range(8, 12)]
    run.method.load_state_dict(saved)
    assert [run.method.choose(s) for s in range(8, 12)] == ahead


def test_bad_switch_mode_is_named():
    from methods.badam import BAdam
    with pytest.raises(ValueError, match="method.switch_mode='sideways'; allowed: random, ascending, descending, fixed"):
        BAdam(**method_knobs("badam", switch_mode="sideways"))


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def training_bytes(run) -> int:
    """Parameters + optimizer state + BAdam's fp32 masters, by tensor size (CPU)."""
    from bench.models.loading import unique_parameters
    params = unique_parameters(run.model.parameters())
    state = [v for s in run.state.optimizer.state.values() for v in s.values()]
    masters = list(getattr(run.method, "masters", {}).values())
    return tensor_bytes(params) + tensor_bytes(state) + tensor_bytes(masters)


def test_badam_precision_holds_bf16_weights_and_an_fp32_master_of_the_active_block_only():
    runs = {}
    for scheme in ("badam", "fp32"):
        run = tiny_run("badam", "method.switch_every=10", f"method.precision_scheme={scheme}", "train.lr=3e-3")
        run_steps(run, 25, expected_active=1)
        runs[scheme] = run
    badam, fp32 = runs["badam"], runs["fp32"]
    assert {p.dtype for p in badam.model.parameters()} == {torch.bfloat16}
    active = badam.method.layout.blocks[badam.method._chosen[0]].params
    assert set(badam.method.masters) == set(active)  # one block's masters: the previous ones are gone
    for p in active:
        assert badam.method.masters[p].dtype == torch.float32
        assert torch.equal(p.detach(), badam.method.masters[p].to(torch.bfloat16))  # copied back
        assert {v.dtype for k, v in badam.state.optimizer.state[p].items() if k != "step"} == {torch.float32}
    # parameters 2 bytes instead of 4 everywhere, for 4 bytes of master per active parameter
    n_params = sum(p.numel() for p in badam.model.parameters())
    n_active = sum(p.numel() for p in active)
    assert training_bytes(badam) == training_bytes(fp32) - 2 * n_params + 4 * n_active
    assert training_bytes(badam) < training_bytes(fp32)
    losses = [h["loss"] for h in badam.history]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3, losses  # it still learns (4.22 -> 3.64 measured)


def test_badam_precision_state_survives_a_state_dict_round_trip():
    run = tiny_run("badam", "method.switch_every=10")
    run_steps(run, 3)
    saved = run.method.state_dict()
    fresh = tiny_run("badam", "method.switch_every=10")
    fresh.state.optimizer.load_state_dict(run.state.optimizer.state_dict())  # casts state to bf16
    fresh.method.load_state_dict(saved)
    for p, q in zip(run.method.layout.blocks[3].params, fresh.method.layout.blocks[3].params):
        assert torch.equal(run.method.masters[p], fresh.method.masters[q])
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(run.state.optimizer.state[p][key], fresh.state.optimizer.state[q][key])


def test_bad_precision_scheme_is_named():
    from methods.badam import BAdam
    with pytest.raises(ValueError, match="method.precision_scheme='fp16'; allowed: badam, fp32"):
        BAdam(**method_knobs("badam", precision_scheme="fp16"))
