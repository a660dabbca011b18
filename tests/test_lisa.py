"""methods/lisa.py: n_layers uniform layers per interval; embeddings, norm and head always train."""
from __future__ import annotations

from block_harness import run_steps, tiny_run


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
