"""A tiny training run built by the real run object (bench/run/recipe.py: Hydra config, tokenizer,
task, batch stream, method, optimizer, the real loop) for the block-selection tests, plus the
invariants every selection method must keep after each optimizer step."""
from __future__ import annotations

import torch

from bench.run.recipe import Run
from conftest import compose_config

CPU = torch.device("cpu")


def tiny_run(method_name: str, *overrides: str, arch: str = "llama", layers: int = 4, batch_size: int = 8,
             gradient_checkpointing: bool = False, seed: int = 0, total_steps: int = 50,
             method_obj=None) -> Run:
    """A random-init tiny model (no base pretraining: these tests check mechanics, not accuracy).
    The run records nothing (no ledger); `run.history` holds each step's metrics, and `run_steps` adds the active blocks."""
    cfg = compose_config(f"model=tiny-{arch}", "model.base=null", f"method={method_name}",
                         f"train.batch_size={batch_size}", f"model.dims.num_hidden_layers={layers}",
                         "train.warmup_steps=0", f"seed={seed}", f"train.max_steps={total_steps}", "device=cpu",
                         f"train.gradient_checkpointing={str(gradient_checkpointing).lower()}", *overrides)
    return Run.build(cfg, method=method_obj)


def clone_state(state: dict) -> dict:
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def run_steps(run: TinyRun, n: int, expected_active: int | None = None) -> None:
    """`n` optimizer steps through the real loop, checking the invariants after each step:
    the active count; inactive blocks bit-identical and without .grad; under drop/offload no state
    of an inactive block in the optimizer; under offload the stored state equals what left."""
    method, opt = run.method, run.state.optimizer
    blocks = method.layout.blocks
    policy = method.activation.residency.policy
    before = {id(p): p.detach().clone() for p in run.model.parameters()}
    last_state = {p: clone_state(s) for p, s in opt.state.items()}

    def check(step: int, metrics: dict) -> None:
        nonlocal before, last_state
        active = set(method._chosen)
        assert metrics["active_blocks"] == len(active)
        if expected_active is not None:
            assert len(active) == expected_active, (step, active)
        candidates = {id(p) for p in method.layout.candidate_parameters()}
        for i, block in enumerate(blocks):
            if i in active:
                continue
            for p in block.params:
                assert torch.equal(p.detach(), before[id(p)]), f"step {step}: inactive block {i} changed"
                assert p.grad is None, f"step {step}: inactive block {i} holds a .grad"
                assert not p.requires_grad
                if policy in ("drop", "offload"):
                    assert p not in opt.state, f"step {step}: state of inactive block {i} in the optimizer"
                if policy == "offload" and p in method.activation.residency.offloaded:
                    assert states_equal(method.activation.residency.offloaded[p], last_state[p])
        for p in run.model.parameters():  # never-trainable weights never move
            if id(p) not in candidates:
                assert torch.equal(p.detach(), before[id(p)]) and p.grad is None
        run.history[-1]["active"] = sorted(active)  # the run logged this step just before
        before = {id(p): p.detach().clone() for p in run.model.parameters()}
        last_state.update({p: clone_state(s) for p, s in opt.state.items()})

    run.train(until=run.state.step + n, observers=[Check(check)])


class Check:
    """A loop observer that runs `check(step, metrics)` after every step."""

    def __init__(self, check):
        self.check = check

    def step_start(self, step: int) -> None:
        pass

    def step_end(self, step: int, metrics: dict) -> None:
        self.check(step, metrics)
