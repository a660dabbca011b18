"""methods/badam.py: one block at a time, switched every K steps, optimizer state reset at switches."""
from __future__ import annotations

import pytest

from block_harness import run_steps, tiny_run


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
        BAdam(switch_every=5, switch_mode="sideways")
