"""bench/run/optim.py: the optimizer, the schedule and gradient clipping."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.run.optim import build_optimizer, clip_gradients


def _cfg(**over):
    return OmegaConf.create({"lr": 1e-2, "betas": [0.9, 0.999], "weight_decay": 0.1, **over})


def _model_with_grads(seed: int, grad_scale: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    loss = model(torch.randn(5, 8)).square().sum() * grad_scale
    loss.backward()
    return model


@pytest.mark.parametrize("grad_scale", [1e-4, 50.0])  # below the clip threshold, far above it
def test_clip_in_fused_adamw_matches_clip_grad_norm(grad_scale):
    """The clip factor handed to the fused kernel gives the update `clip_grad_norm_` + step gives."""
    models = [_model_with_grads(0, grad_scale) for _ in range(2)]
    optimizers = [build_optimizer(list(m.parameters()), _cfg(), torch.device("cpu")) for m in models]
    assert all(o.defaults["fused"] for o in optimizers)
    for step in range(3):
        if step:  # fresh gradients on later steps, the same for both
            for model in models:
                model.zero_grad()
                torch.manual_seed(step)
                (model(torch.randn(5, 8)).square().sum() * grad_scale).backward()
        grads_before = [p.grad.clone() for p in models[0].parameters()]
        norm = clip_gradients(optimizers[0], list(models[0].parameters()), 1.0)
        ref_norm = torch.nn.utils.clip_grad_norm_(list(models[1].parameters()), 1.0)
        torch.testing.assert_close(norm, ref_norm)
        # one pass fewer: the gradients themselves are left alone, the kernel applies the factor
        assert all(torch.equal(p.grad, g) for p, g in zip(models[0].parameters(), grads_before))
        for optimizer in optimizers:
            optimizer.step()
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_clip_with_an_unfused_optimizer_rescales_the_gradients():
    model = _model_with_grads(1, 50.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    norm = clip_gradients(optimizer, list(model.parameters()), 1.0)
    assert float(norm) > 1.0
    after = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert float(after) == pytest.approx(1.0, rel=1e-4)
    assert not hasattr(optimizer, "grad_scale")
