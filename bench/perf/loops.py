"""The two training loops `bench.perf.lab` compares, and the evaluation-throughput run.

- `run_plain`: a plain PyTorch loop written as one would by hand (fp32 weights, bf16 autocast,
  fused AdamW, sdpa, HF's own loss), for `full`, `static25` (a fixed 25% of the decoder blocks:
  the rest frozen, no optimizer state for them, backward stops at the lowest active block because
  nothing below it needs a gradient) and `lora` (peft, the knobs of conf/method/lora.yaml).
- `run_harness`: the harness's own `bench.train.train` with a method object, exactly as
  `bench/run/recipe.py` drives it (MethodContext, prepare, trainable_parameters, optimizer, hooks).
Both see the same batches, step count, learning rate, clipping and checkpointing; both time each
step between device synchronizations and report the median after warm-up.
"""
from __future__ import annotations

import gc
import random
import time
from itertools import cycle

import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model

from bench.eval.evaluate import generate_hf
from bench.loss import compile_decoder_layers
from bench.eval.static_engine import generate_static
from bench.run.observers import PhaseMemory, StepTimer
from bench.runtime import autocast, synchronize
from bench.models.loading import decoder_layers, enable_gradient_checkpointing, unique_parameters
from bench.run.optim import build_optimizer, build_scheduler
from bench.perf.data import REPO
from bench.run.loop import TrainState, train
from methods.base import Method, MethodContext

PLAIN_VARIANTS = ("full", "static25", "lora")


def choose_blocks(n_layers: int, fraction: float, seed: int) -> list[int]:
    """The static selection: a seeded random `fraction` of the blocks (on random weights a
    gradient-norm ranking is no better than chance; seeded so both loops train the same blocks)."""
    k = max(1, round(n_layers * fraction))
    return sorted(random.Random(seed).sample(range(n_layers), k))


def freeze_all_but(model: torch.nn.Module, blocks: list[int]) -> None:
    """Embeddings, norms and head frozen too: only the chosen blocks train."""
    model.requires_grad_(False)
    for index in blocks:
        decoder_layers(model)[index].requires_grad_(True)


class FixedBlocks(Method):
    """Harness side of `static25`: the same fixed block set as the plain loop's, as a Method."""

    def __init__(self, blocks: list[int]):
        self.blocks = list(blocks)

    def prepare(self, model, ctx):
        super().prepare(model, ctx)
        freeze_all_but(model, self.blocks)
        return model

    def step_metrics(self):
        return {"active_blocks": len(self.blocks)}


def method_config(name: str, knobs: list[str] | None = None):
    """`conf/method/<name>.yaml` composed by Hydra, as `slmbench method=<name> method.<knob>=...`
    sees it (a method yaml may extend another through its defaults list, as ist.yaml extends
    lora.yaml). `knobs`: ["policy=keep", ...], each applied as `method.policy=keep`."""
    from hydra import compose, initialize_config_dir

    import bench.config.schema  # noqa: F401 - the schema config.yaml's defaults list names

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = [f"method={name}"] + [f"method.{knob}" for knob in knobs or []]
        return compose(config_name="config", overrides=overrides).method


def lora_config() -> LoraConfig:
    """conf/method/lora.yaml's knobs, for the plain loop (which uses peft directly, no Method)."""
    knobs = OmegaConf.to_container(method_config("lora"))
    knobs.pop("_target_")
    return LoraConfig(task_type="CAUSAL_LM", **{**knobs, "target_modules": list(knobs["target_modules"])})


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _memory(memory: PhaseMemory) -> dict:
    peaks = memory.peaks()
    return {"peak_allocated_gib": peaks["allocated_gib"], "peak_reserved_gib": peaks["reserved_gib"],
            "alloc_retries": peaks["alloc_retries"]}


def _timing(step_seconds: list[float], warmup: int, tokens_per_step: int) -> dict:
    timed = sorted(step_seconds[warmup:])
    median = timed[len(timed) // 2] if timed else None
    return {"median_step_s": median, "tokens_per_s": tokens_per_step / median if median else None,
            "first_step_s": step_seconds[0] if step_seconds else None}


def run_plain(model, variant: str, batches: list[dict], warmup: int, steps: int, lr: float,
              grad_clip: float | None, device: torch.device, gradient_checkpointing: bool,
              blocks: list[int]) -> dict:
    if variant not in PLAIN_VARIANTS:
        raise ValueError(f"--plain: unknown variant {variant!r}; allowed: {', '.join(PLAIN_VARIANTS)}")
    memory = PhaseMemory(device)
    memory.start()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if variant == "static25":
        freeze_all_but(model, blocks)
    elif variant == "lora":
        model = get_peft_model(model, lora_config())
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, fused=device.type in ("cuda", "cpu"))
    model.train()
    seconds, loss = [], None
    for step, batch in zip(range(warmup + steps), cycle(batches)):
        synchronize(device)
        start = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, "bf16" if device.type == "cuda" else "fp32"):
            loss = model(**batch).loss
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    tokens = batches[0]["input_ids"].numel()
    result = {**_timing(seconds, warmup, tokens), **_memory(memory), "trainable_params": sum(p.numel() for p in params),
              "final_loss": float(loss.detach()), "blocks": blocks if variant == "static25" else None}
    del optimizer, params, model
    return result


def profile_steps(state: TrainState, train_cfg, device: torch.device, precision: str, steps: int) -> dict:
    """`steps` more harness steps under torch.profiler: where the step's time goes. GPU busy =
    summed kernel time over wall time; far below 1 means the step waits on the host (launches,
    Python), not on the GPU."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    timer = StepTimer(device, 0)
    with torch.profiler.profile(activities=activities) as prof:
        train(state, train_cfg, device, precision, state.step + steps, timer, on_step=lambda step, metrics: None)
    events = prof.key_averages()
    # Kernels only: an aten op's row repeats the time of the kernels it launched, and a user
    # annotation's GPU row (e.g. "Optimizer.step#AdamW.step") spans the kernels inside it.
    kernel_us = sum(e.self_device_time_total for e in events
                    if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)) \
        if device.type == "cuda" else 0.0
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {"profiled_steps": steps, "profiled_wall_s": timer.total_seconds,
            "gpu_busy_fraction": kernel_us / 1e6 / timer.total_seconds if kernel_us else None,
            "profile_table": events.table(sort_by=sort, row_limit=25, max_name_column_width=60)}


def train_config(lr: float, grad_clip: float | None, gradient_checkpointing: bool, fast_path: str = "none",
                 compiled: bool = False):
    """The `cfg.train` the harness rows run with: constant LR, no weight decay, one micro-batch."""
    return OmegaConf.create({
        "grad_accum": 1, "lr": lr, "betas": [0.9, 0.999], "schedule": "constant", "warmup_steps": 0,
        "min_lr_ratio": 1.0, "weight_decay": 0.0, "grad_clip": grad_clip,
        "gradient_checkpointing": gradient_checkpointing, "fast_path": fast_path, "compile": compiled})


def prepare_harness(model, method: Method, batches: list[dict], train_cfg, device: torch.device, seed: int,
                    total_steps: int):
    """What bench/run/recipe.py does before its loop: checkpointing, the MethodContext, `method.prepare`,
    compilation and the optimizer the method attaches to. Returns (model, params, optimizer)."""
    if train_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    sampler = cycle(batches)
    ctx = MethodContext(device=device, total_steps=total_steps, steps_per_epoch=len(batches),
                        gradient_checkpointing=train_cfg.gradient_checkpointing, seed=seed,
                        grad_accum=train_cfg.grad_accum,
                        sample_batch=lambda n: {k: v[:n] for k, v in next(sampler).items()},
                        precision="bf16" if device.type == "cuda" else "fp32")
    model = method.prepare(model, ctx)
    if train_cfg.compile:
        compile_decoder_layers(model)
    params = unique_parameters(method.trainable_parameters(model))
    optimizer = build_optimizer(params, train_cfg, device)
    method.attach_optimizer(optimizer)
    return model, params, optimizer


def run_harness(model, method: Method, batches: list[dict], warmup: int, steps: int, train_cfg,
                device: torch.device, seed: int, profile_steps_n: int = 0) -> dict:
    memory = PhaseMemory(device)
    memory.start()
    total = warmup + steps
    model, params, optimizer = prepare_harness(model, method, batches, train_cfg, device, seed, total)
    state = TrainState(model, method, optimizer, build_scheduler(optimizer, train_cfg, total), cycle(batches))
    timer = StepTimer(device, warmup)
    precision = "bf16" if device.type == "cuda" else "fp32"
    loss = train(state, train_cfg, device, precision, total, timer, on_step=lambda step, metrics: None)
    tokens = batches[0]["input_ids"].numel()
    result = {**_timing(timer.step_seconds, warmup, tokens), **_memory(memory),
              "trainable_params": sum(p.numel() for p in params), "final_loss": loss,
              "blocks": getattr(method, "blocks", None)}
    if profile_steps_n:  # after the figures above, so profiling never touches them
        result.update(profile_steps(state, train_cfg, device, precision, profile_steps_n))
    del state, optimizer, params, model
    return result


def run_eval(model, tokenizer, prompts: list[str], engine: str, batch_size: int, max_new_tokens: int,
             device: torch.device, cuda_graphs: bool) -> tuple[dict, list[str]]:
    """Greedy generation of every prompt to `max_new_tokens`, timed end to end (tokenizing,
    sorting, prefill, graph capture, decode, detokenizing)."""
    memory = PhaseMemory(device)
    memory.start()
    precision = "bf16" if device.type == "cuda" else "fp32"
    synchronize(device)
    start = time.perf_counter()
    if engine == "static":
        texts = generate_static(model, tokenizer, prompts, max_new_tokens, batch_size, device, precision,
                                cuda_graphs=cuda_graphs, desc="eval static")
    elif engine == "hf":
        texts = generate_hf(model, tokenizer, prompts, max_new_tokens, batch_size, device, precision, desc="eval hf")
    else:
        raise ValueError(f"--eval-engines: unknown engine {engine!r}; allowed: static, hf")
    synchronize(device)
    wall = time.perf_counter() - start
    prompt_tokens = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    return {"engine": engine, "prompts": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new_tokens,
            "cuda_graphs": (cuda_graphs and device.type == "cuda") if engine == "static" else None, "wall_s": wall,
            "prompts_per_s": len(prompts) / wall, "generated_tokens_per_s": len(prompts) * max_new_tokens / wall,
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens), "max_prompt_tokens": max(prompt_tokens),
            **_memory(memory)}, texts
