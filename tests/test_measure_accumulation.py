"""methods/blocks.py GradNormTopK under gradient accumulation: the first micro-batch ranks the
blocks, at most k + 1 blocks hold a gradient at any moment of a measuring step, and the chosen
blocks end the step with the gradient of the whole window."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.data.batching import IGNORE_INDEX
from bench.loss import training_loss
from bench.models.loading import build_tiny, load_tokenizer
from bench.run.loop import train
from block_harness import CPU, tiny_run
from methods.blocks import GradNormTopK
from method_helpers import method_knobs


class Recorded:
    """The run's batch stream, remembering what it handed out."""

    def __init__(self, batches):
        self.batches, self.seen = batches, []

    def __next__(self):
        batch = next(self.batches)
        self.seen.append({k: v.clone() for k, v in batch.items()})
        return batch


def reference_gradients(run, initial: dict, micro_batches: list[dict]) -> tuple[list, list]:
    """Per block: the first micro-batch's gradient norm, and the whole window's gradients."""
    model = build_tiny(run.cfg.model, load_tokenizer(run.cfg.model))
    model.load_state_dict(initial)
    layers = list(model.model.layers)
    loss_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    first_norms = None
    for batch in micro_batches:
        training_loss(model, batch, loss_tokens, "none", CPU).backward()
        if first_norms is None:
            first_norms = torch.stack([torch.sqrt(sum(p.grad.pow(2).sum() for p in layer.parameters()))
                                       for layer in layers])
    window = [[p.grad.clone() for p in layer.parameters()] for layer in layers]
    return first_norms, window


@pytest.mark.parametrize("grad_accum,fast_path", [(2, "none"), (4, "none"), (2, "chunked_ce")])
def test_first_micro_batch_ranks_and_at_most_k_plus_one_blocks_hold_a_gradient(grad_accum, fast_path):
    k = 2
    run = tiny_run("topk", "method.k_percent=34", "method.select_every=1", f"train.grad_accum={grad_accum}",
                   f"train.fast_path={fast_path}", "train.grad_clip=null", layers=6, batch_size=4)
    method, blocks = run.method, run.method.layout.blocks
    assert method.k == k
    initial = {name: t.clone() for name, t in run.model.state_dict().items()}
    run.state.batches = Recorded(run.state.batches)

    holding = []  # after every gradient lands (and at every forward): blocks holding a gradient

    def count(*_):
        holding.append(sum(any(p.grad is not None for p in b.params) for b in blocks))
    method.activation.enable_grads(range(len(blocks)))  # torch hooks only grad-requiring tensors
    for b in blocks:  # registered after the meter's hooks, so they see the meter's drops
        for p in b.params:
            p.register_post_accumulate_grad_hook(count)
    method.activation.enable_grads(())
    run.model.register_forward_pre_hook(count)

    captured = {}
    after_backward = method.after_backward

    def capture(step, model):
        after_backward(step, model)
        captured["chosen"] = list(method._chosen)
        captured["grads"] = {i: [p.grad.clone() for p in blocks[i].params] for i in method._chosen}
        captured["holding"] = [i for i, b in enumerate(blocks) if any(p.grad is not None for p in b.params)]
    method.after_backward = capture

    train(run.state, run.cfg.train, 1)

    assert len(run.state.batches.seen) == grad_accum
    assert max(holding) <= k + 1, holding
    first_norms, window = reference_gradients(run, initial, run.state.batches.seen)
    torch.testing.assert_close(method.last_norms, first_norms, rtol=1e-4, atol=0)
    expected = sorted(torch.argsort(first_norms, descending=True, stable=True)[:k].tolist())
    assert captured["chosen"] == expected
    assert captured["holding"] == expected  # no other block holds a gradient at the optimizer step
    for i in expected:
        for got, want in zip(captured["grads"][i], window[i]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_measure_declaration_is_checked_when_prepared():
    from methods.topk import TopK

    class Wrong(TopK):
        def choose_from_norms(self, step, norms):
            return [0]

    with pytest.raises(TypeError, match="overrides choose_from_norms"):
        tiny_run("topk", method_obj=Wrong(**method_knobs("topk", select_every=1)))
    bad = TopK(**method_knobs("topk", select_every=1))
    bad.measure = {"k_percent": 25}
    with pytest.raises(TypeError, match="measure must be a methods.blocks.GradNormTopK"):
        tiny_run("topk", method_obj=bad)
    assert GradNormTopK(25).checkpointing  # on unless a method turns it off


def test_measure_without_the_declaration_is_named():
    from methods.blocks import MEASURE, BlockSelectionMethod

    class Undeclared(BlockSelectionMethod):
        def choose(self, step):
            return MEASURE

    run = tiny_run("topk", method_obj=Undeclared("keep"))
    with pytest.raises(RuntimeError, match="declares no measurement: pass measure=GradNormTopK"):
        run.method.on_step_start(0, run.model)
