"""bench/run/optim.py: the optimizer, the schedule and gradient clipping."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.run.optim import build_optimizer, clip_gradients, scaled_schedule


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


# -- train.lr_scaling: lr and warm-up follow packed's token budget ------------------------------

@pytest.mark.parametrize("scaling, lr, warmup", [("none", 1e-3, 10), ("sqrt", 2e-3, 3), ("linear", 4e-3, 3)])
def test_scaled_schedule_follows_the_token_budget_ratio(scaling, lr, warmup):
    """Four times the tokens per step: sqrt doubles lr, linear quadruples it, and either spans the
    same warm-up tokens in a quarter of the steps (12 -> 3); none changes neither."""
    cfg = OmegaConf.create({"lr": 1e-3, "warmup_steps": 12 if scaling != "none" else 10, "lr_scaling": scaling})
    schedule = scaled_schedule(cfg, tokens_ratio=4.0)
    assert schedule["lr"] == pytest.approx(lr) and schedule["warmup_steps"] == warmup
    assert schedule["lr_scaling"] == scaling and schedule["tokens_ratio"] == 4.0


def test_a_scaled_run_trains_at_the_scaled_lr_and_records_it(cache_dir):
    """A packed run with twice the default budget and lr_scaling=sqrt: its optimizer's peak lr is
    train.lr x sqrt(budget / default budget), and the record says so."""
    from bench.run.recipe import Run
    from conftest import compose_config

    base = ["model=tiny-llama", "train.max_steps=2", "train.batching=packed", "device=cpu", "wandb.mode=disabled",
            "train.warmup_steps=0", "train.schedule=constant", f"cache_dir={cache_dir}"]
    default = Run.build(compose_config(*base))
    budget = 2 * default.batches.default_budget
    run = Run.build(compose_config(*base, f"train.pack_tokens={budget}", "train.lr_scaling=sqrt"))
    ratio = budget / run.batches.default_budget
    assert run.facts["schedule"]["tokens_ratio"] == pytest.approx(ratio)
    assert run.state.optimizer.param_groups[0]["lr"] == pytest.approx(run.cfg.train.lr * ratio ** 0.5)
    assert default.facts["schedule"]["lr"] == default.cfg.train.lr  # lr_scaling=none: unchanged


def test_lr_scaling_without_a_packed_budget_is_refused():
    from bench.config.checks import check
    from bench.errors import ConfigError
    from conftest import compose_config

    with pytest.raises(ConfigError, match="train.lr_scaling=sqrt .* needs train.batching=packed and train.pack_tokens"):
        check(compose_config("train.lr_scaling=sqrt"))
    with pytest.raises(ConfigError, match="train.lr_scaling='cubic'; allowed: none, sqrt, linear"):
        check(compose_config("train.batching=packed", "train.pack_tokens=64", "train.lr_scaling=cubic"))
