"""methods/lisa.py: n_layers uniform layers per interval; embeddings, norm and head always train."""
from __future__ import annotations

from block_harness import run_steps, tiny_run
from method_helpers import method_knobs


def test_resamples_every_interval_and_trains_embeddings_and_head():
    run = tiny_run("lisa", "method.interval_steps=3")
    embed = run.model.model.embed_tokens.weight
    before = embed.detach().clone()
    run_steps(run, 7, expected_active=2)
    sets = [tuple(h["active"]) for h in run.history]
    assert sets[0] == sets[1] == sets[2] and sets[3] == sets[4] == sets[5]
    assert embed.requires_grad and not torch_equal(embed, before)  # "E+H" train every step
    assert run.model.lm_head.weight is embed


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a.detach(), b)


def test_draws_are_uniform_over_layers_and_resume_exactly():
    run = tiny_run("lisa", "method.interval_steps=1", "method.n_layers=1", layers=4)
    draws = [run.method.choose(s)[0] for s in range(4000)]
    freq = [draws.count(i) / len(draws) for i in range(4)]
    # 4000 draws of p=0.25: sd 0.0068; 0.03 is > 4 sd
    assert all(abs(f - 0.25) < 0.03 for f in freq), freq
    saved = run.method.state_dict()
    next_draws = [run.method.choose(s) for s in range(5)]
    run.method.load_state_dict(saved)
    assert [run.method.choose(s) for s in range(5)] == next_draws


def test_keep_holds_every_state_as_lmflow_and_fresh_each_interval_restarts_them_as_the_paper():
    import pytest
    for policy in ("keep", "fresh_each_interval"):
        run = tiny_run("lisa", "method.interval_steps=2", "method.n_layers=1", f"method.policy={policy}")
        opt, blocks = run.state.optimizer, run.method.layout.blocks
        run_steps(run, 6, expected_active=1)
        embed_steps = float(opt.state[run.model.model.embed_tokens.weight]["step"])
        trained = [h["active"][0] for h in run.history]  # one layer per step, switched at 0, 2, 4
        with_state = {i for i, b in enumerate(blocks) if all(p in opt.state for p in b.params)}
        if policy == "keep":
            assert embed_steps == 6  # E+H's state runs through the whole run
            assert with_state == set(trained)  # idle layers keep theirs
            for i in with_state:
                assert {float(opt.state[p]["step"]) for p in blocks[i].params} == {trained.count(i)}
        else:
            assert embed_steps == 2  # forgotten at the switch before step 4
            assert with_state == {trained[-1]}
            assert {float(opt.state[p]["step"]) for p in blocks[trained[-1]].params} == {2}
    with pytest.raises(ValueError, match="method.policy='fresh'; allowed: keep, drop, offload, fresh_each_interval"):
        from methods.lisa import LISA
        LISA(**method_knobs("lisa", policy="fresh"))
