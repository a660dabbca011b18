"""A tiny training run assembled from the real spine pieces (Hydra config, tokenizer, task, batch
stream, optimizer, `bench.train.train`) for the block-selection tests, plus the invariants every
selection method must keep after each optimizer step."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.data.batching import BatchStream, RandomBatches, tokenize_examples
from bench.run.observers import StepTimer
from bench.models.loading import build_tiny, load_tokenizer, unique_parameters
from bench.run.optim import build_optimizer, build_scheduler
from bench.run.loop import TrainState, train
from conftest import compose_config
from methods.base import MethodContext

CPU = torch.device("cpu")


@dataclass
class TinyRun:
    model: torch.nn.Module
    method: object
    state: TrainState
    cfg: object
    ctx: MethodContext
    history: list[dict] = field(default_factory=list)  # per step: chosen blocks and metrics


def tiny_run(method_name: str, *overrides: str, arch: str = "llama", layers: int = 4, batch_size: int = 8,
             gradient_checkpointing: bool = False, seed: int = 0, total_steps: int = 50,
             method_obj=None) -> TinyRun:
    """A random-init tiny model (no base pretraining: these tests check mechanics, not accuracy)."""
    cfg = compose_config(f"model=tiny-{arch}", f"method={method_name}", f"train.batch_size={batch_size}",
                         f"model.dims.num_hidden_layers={layers}", "train.warmup_steps=0", f"seed={seed}", *overrides)
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(cfg.model)
    model = build_tiny(cfg.model, tokenizer)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    task = instantiate(cfg.task)
    examples = tokenize_examples(tokenizer, task.train_examples(), cfg.train.max_seq_len)
    batches = BatchStream(examples, batch_size, tokenizer.pad_token_id, seed)
    ctx = MethodContext(device=CPU, total_steps=total_steps, steps_per_epoch=batches.batches_per_epoch,
                        gradient_checkpointing=gradient_checkpointing, seed=seed, grad_accum=cfg.train.grad_accum,
                        sample_batch=RandomBatches(examples, tokenizer.pad_token_id, seed + 1))
    method = method_obj if method_obj is not None else instantiate(cfg.method)
    model = method.prepare(model, ctx)
    optimizer = build_optimizer(unique_parameters(method.trainable_parameters(model)), cfg.train, CPU)
    method.attach_optimizer(optimizer)
    state = TrainState(model, method, optimizer, build_scheduler(optimizer, cfg.train, total_steps), batches)
    return TinyRun(model, method, state, cfg, ctx)


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
        run.history.append({"step": step, "active": sorted(active), **metrics})
        before = {id(p): p.detach().clone() for p in run.model.parameters()}
        last_state.update({p: clone_state(s) for p, s in opt.state.items()})

    train_cfg = OmegaConf.create({"grad_accum": 1, "grad_clip": 1.0})
    start = run.state.step
    train(run.state, train_cfg, CPU, "fp32", start + n, StepTimer(CPU, 0), check)
