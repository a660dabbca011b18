"""The loops `bench.perf.lab` compares, and the evaluation-throughput row.

- `run_plain`: a plain PyTorch loop written as one would by hand (fp32 weights, bf16 autocast,
  fused AdamW, sdpa, HF's own loss), deliberately independent of the harness, for `full`,
  `static25` (a fixed 25% of the decoder blocks: the rest frozen, no optimizer state for them) and
  `lora` (peft, the knobs of conf/method/lora.yaml). It is fed the very batches the harness row
  trains on (bench/perf/workload.py draw_batches).
- `run_harness`: the run object (bench/run/recipe.py) of the same config, as `slmbench` runs it;
  timing, memory and profiling attach as observers; `run_harness_window` trains it to the end
  (e.g. one epoch) and reports a timed window of it beside the whole.
- `run_hf_trainer`: HF `Trainer` on the run's tokenized examples (what users would pick instead).
- `timed_generation`: an eval engine on given prompts, as `Run.evaluate` calls it (stop tokens, stop strings).
All time each step between device synchronizations and report the median after warm-up.
"""
from __future__ import annotations

import gc
import itertools
import random
import sys
import threading
import time

import torch
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

from bench.data.batching import collate
from bench.data.examples import TokenizedExample
from bench.eval.evaluate import cut_at_stop_strings, generate_with_engine
from bench.eval.stop_tokens import stop_token_ids
from bench.models.loading import decoder_layers
from bench.perf.workload import compose, draw_batches, padding_fraction, real_tokens
from bench.run.observers import PhaseMemory
from bench.run.recipe import Run
from bench.runtime import autocast, synchronize
from methods.base import Method

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

    def __init__(self, fraction: float, seed: int):
        self.fraction, self.seed, self.blocks = fraction, seed, None

    def prepare(self, model, ctx):
        super().prepare(model, ctx)
        self.blocks = choose_blocks(len(decoder_layers(model)), self.fraction, self.seed)
        freeze_all_but(model, self.blocks)
        return model

    def step_metrics(self):
        return {"active_blocks": len(self.blocks)}


class HostActivity:
    """Where a loop's host time goes, beside the profiler: the main thread's CPU time against its
    wall-clock time, Python's garbage-collector passes and their time, the threads alive, and
    torch's global switches that slow every op's dispatch (anomaly mode, deterministic algorithms,
    global module hooks, trace functions). Both sides of an overhead pair carry one, so an
    asymmetry shows. Wall time without CPU time is the main thread waiting: mostly on autograd's
    device thread, which runs `backward()`'s host work (about half of a launch-bound step on an
    H200, 2026-12-03), else on the GIL or the OS scheduler; a CUDA sync that spins counts as CPU.
    `stop()` and `start()` pause and resume it: the figures add up over the spans it ran (an
    overhead pair's two sides take turns, PlainTurns)."""

    def __init__(self):
        self.collections, self.gc_s, self.wall_s, self.cpu_s = [0, 0, 0], 0.0, 0.0, 0.0
        self._gc_t0, self._running, self.state = 0.0, False, {}

    def __enter__(self) -> "HostActivity":
        self.state = host_state()
        self.start()
        return self

    def start(self) -> None:
        if not self._running:
            gc.callbacks.append(self._on_gc)
            self._wall0, self._cpu0, self._running = time.perf_counter(), time.thread_time(), True

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.collections[info["generation"]] += 1
            self.gc_s += time.perf_counter() - self._gc_t0

    def stop(self) -> None:
        """The end of a measured span (later steps, e.g. profiled ones, are not counted)."""
        if self._running:
            self.wall_s += time.perf_counter() - self._wall0
            self.cpu_s += time.thread_time() - self._cpu0
            gc.callbacks.remove(self._on_gc)
            self._running = False

    def __exit__(self, *exc) -> None:
        self.stop()

    def summary(self) -> dict:
        return {"wall_s": self.wall_s, "main_thread_cpu_s": self.cpu_s, "gc_collections": self.collections,
                "gc_s": self.gc_s, **self.state}


def host_state() -> dict:
    """The process-wide settings and threads a loop runs under (see HostActivity)."""
    from torch.nn.modules import module as nn_module

    hooks = sum(len(getattr(nn_module, name)) for name in dir(nn_module) if name.startswith("_global_") and name.endswith("hooks"))
    return {"threads": sorted(t.name for t in threading.enumerate()), "torch_threads": torch.get_num_threads(),
            "anomaly_mode": torch.is_anomaly_enabled(), "deterministic": torch.are_deterministic_algorithms_enabled(),
            "global_module_hooks": hooks, "trace_or_profile_fn": sys.gettrace() is not None or sys.getprofile() is not None,
            "gc_thresholds": list(gc.get_threshold()), "gc_tracked_objects": len(gc.get_objects())}


def lora_config() -> LoraConfig:
    """conf/method/lora.yaml's knobs, for the plain loop (which uses peft directly, no Method)."""
    knobs = OmegaConf.to_container(compose(["method=lora"]).method)
    knobs.pop("_target_")
    return LoraConfig(task_type="CAUSAL_LM", **{**knobs, "target_modules": list(knobs["target_modules"])})


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _memory(memory: PhaseMemory) -> dict:
    peaks = memory.peaks()
    return {"peak_allocated_gib": peaks["allocated_gib"], "peak_reserved_gib": peaks["reserved_gib"],
            "alloc_retries": peaks["alloc_retries"], "device_mallocs": peaks["device_mallocs"]}


def _timing(step_seconds: list[float], step_tokens: list[int], warmup: int) -> dict:
    """Median step after `warmup`, and real (non-padding) tokens/s over the timed steps."""
    timed = step_seconds[warmup:]
    median = sorted(timed)[len(timed) // 2] if timed else None
    tokens_per_s = sum(step_tokens[warmup:]) / sum(timed) if timed else None
    return {"median_step_s": median, "tokens_per_s": tokens_per_s,
            "first_step_s": step_seconds[0] if step_seconds else None}


class PlainLoop:
    """The plain loop's state and its step, one step at a time: `run_plain` runs it over its
    batches; an overhead pair runs it in turns with the harness (PlainTurns). Each step is timed
    from the batch's copy to the device to the loss read, between device syncs."""

    def __init__(self, model, variant: str, lr: float, grad_clip: float | None, device: torch.device,
                 precision: str, blocks: list[int] = ()):
        if variant not in PLAIN_VARIANTS:
            raise ValueError(f"--plain: unknown variant {variant!r}; allowed: {', '.join(PLAIN_VARIANTS)}")
        if variant == "static25":
            freeze_all_but(model, blocks)
        elif variant == "lora":
            model = get_peft_model(model, lora_config())
        self.model, self.device, self.precision, self.grad_clip = model, device, precision, grad_clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, fused=device.type in ("cuda", "cpu"))
        self.seconds, self.tokens, self.losses = [], [], []

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with autocast(self.device, self.precision):
            loss = self.model(**batch, use_cache=False).loss
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)
        self.tokens.append(real_tokens(batch))

    def resident_bytes(self) -> int:
        return resident_bytes(self.model, self.optimizer, self.device)


def resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Device bytes a loop holds between steps: its weights and optimizer state (gradients are
    dropped at each step's end), counted by distinct storage."""
    tensors = [*model.parameters(), *(t for state in optimizer.state.values() for t in state.values()
                                      if torch.is_tensor(t))]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors
                if t.device.type == device.type}
    return sum(storages.values())


def run_plain(model, variant: str, batches: list[dict], warmup: int, lr: float, grad_clip: float | None,
              device: torch.device, precision: str, blocks: list[int], profile_steps: int = 0) -> dict:
    """`batches`: one per step (warm-up steps first), already what the harness row trains on. The
    last `profile_steps` of them run under torch.profiler and are left out of the timing."""
    warmed = warm_shapes(model, batches, device, precision)
    memory = PhaseMemory(device)
    memory.start()
    loop = PlainLoop(model, variant, lr, grad_clip, device, precision, blocks)
    profiler = Profiler(len(batches) - profile_steps, device, profile_steps)
    timed = len(batches) - profile_steps
    with HostActivity() as host:  # over the timed steps, as the harness's window
        for index, batch in enumerate(batches):
            if profile_steps:
                profiler.step_start(index)
            loop.step(batch)
            if index + 1 == timed:
                host.stop()
            if profile_steps:
                profiler.step_end(index + 1, {"step_s": loop.seconds[-1]})
    seconds, tokens = loop.seconds[:timed], loop.tokens[:timed]
    result = {**_timing(seconds, tokens, warmup), **_memory(memory), "losses": loop.losses,
              "final_loss": loop.losses[-1], **profiler.summary(),
              "trainable_params": sum(p.numel() for p in loop.params), "blocks": blocks if variant == "static25" else None,
              "warmed_shapes": warmed, "step_seconds": seconds, "host": {**host.summary(), "steps": timed}}
    del loop, model
    return result


class SideMemory:
    """Peak allocated GPU memory and cudaMalloc calls of one side of an overhead pair, over the
    spans it runs: each span starts from reset peak statistics, and its peak is counted less the
    other side's resident bytes (its weights and optimizer state, idle while this side steps)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_bytes, self.mallocs, self._open = device, 0, 0, False

    def open(self, other_side_bytes: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._other, self._mallocs0 = other_side_bytes, torch.cuda.memory_stats(self.device).get("num_device_alloc", 0)
        self._open = True

    def close(self) -> None:
        if self._open and self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device) - self._other)
            self.mallocs += torch.cuda.memory_stats(self.device).get("num_device_alloc", 0) - self._mallocs0
        self._open = False

    def figures(self) -> dict:
        cuda = self.device.type == "cuda"
        return {"peak_gpu_gib": self.peak_bytes / 2**30 if cuda else None, "device_mallocs": self.mallocs if cuda else None}


class PlainTurns:
    """An overhead pair in one process, the two sides taking turns: a harness run's observer that,
    each time the run's step timer closes a window (a step whose loss was read: every step, or
    every `train.log_every`), runs the plain loop on the same batches the run just trained on. So
    the sides alternate every few hundred milliseconds and whatever drifts over a process (clocks,
    the host's other work, caches, the allocator) weighs on both alike; measured one after the
    other, the side measured first in a fresh process ran up to 1.7x faster on the very same
    batches (docs/performance-analysis.md). The plain steps run after the run's timer has read
    its clock and before the next step starts it again, so neither side's time holds the other's.

    Host activity, peak memory and cudaMallocs are accounted per side (HostActivity paused and
    resumed; SideMemory). Once the plain loop has run its `batches` (then `profile_steps` more
    under torch.profiler, untimed), it is released and the run trains on alone (e.g. to the end
    of its epoch). `harness_resident_bytes()`: the run's side's resident bytes, read at each turn."""

    def __init__(self, loop: PlainLoop, batches: list[dict], profile_steps: int, harness_resident_bytes):
        self.loop, self.batches, self.done = loop, batches, 0
        self.timed = len(batches) - profile_steps
        self.profiler = Profiler(self.timed, loop.device, profile_steps) if profile_steps else None
        self.harness_resident_bytes = harness_resident_bytes
        device = loop.device
        self.plain_memory, self.harness_memory = SideMemory(device), SideMemory(device)
        self.plain_host, self.harness_host = HostActivity(), None  # the run's: begin()
        self.plain_host.state = host_state()
        self.result: dict = {}

    def begin(self, harness_host: HostActivity) -> None:
        """Just before the run trains: its side is open."""
        self.harness_host = harness_host
        self.harness_memory.open(self.loop.resident_bytes())

    def step_start(self, step: int) -> None:
        pass

    def step_end(self, step: int, metrics: dict) -> None:
        if metrics["loss"] is None or self.loop is None:
            return  # inside the run's timer window, or the plain side is done
        self.harness_host.stop()
        self.harness_memory.close()
        self._plain_turn(step)
        self.harness_memory.open(0 if self.loop is None else self.loop.resident_bytes())
        self.harness_host.start()

    def end(self) -> None:
        """The run has trained: its side closes; plain steps the run did not reach (the profiled
        ones after a window-only run) run now."""
        self.harness_memory.close()
        if self.loop is not None:
            self._plain_turn(len(self.batches))

    def _plain_turn(self, upto: int) -> None:
        """The plain loop's steps up to batch `upto`, on its side's accounting."""
        self.plain_memory.open(self.harness_resident_bytes())
        if self.done < self.timed:
            self.plain_host.start()
        # Once the timed steps are done the profiled ones follow in the same turn: the profiler
        # records the whole process, and no harness step may fall inside its span.
        last = len(self.batches) if upto >= self.timed else upto
        while self.done < last:
            if self.profiler:
                self.profiler.step_start(self.done)
            self.loop.step(self.batches[self.done])
            self.done += 1
            if self.done == self.timed:
                self.plain_host.stop()
            if self.profiler:
                self.profiler.step_end(self.done, {"step_s": self.loop.seconds[-1]})
        self.plain_host.stop()
        self.plain_memory.close()
        if self.done == len(self.batches):
            self._finish()

    def figures(self, warmup: int) -> dict:
        """The plain side's figures, as run_plain reports them (its timed steps: `warmup` first)."""
        r = self.result
        return {**_timing(r["step_seconds"], r["step_tokens"], warmup), "peak_gpu_gib": r["peak_gpu_gib"],
                "device_mallocs": r["device_mallocs"], "steps_trained": len(r["step_seconds"]),
                "final_loss": r["final_loss"], "host": r["host"], "step_seconds": r["step_seconds"],
                **profiled(r)}

    def _finish(self) -> None:
        loop, timed = self.loop, self.timed
        self.result = {"losses": loop.losses, "final_loss": loop.losses[-1],
                       "step_seconds": loop.seconds[:timed], "step_tokens": loop.tokens[:timed],
                       "host": {**self.plain_host.summary(), "steps": timed}, **self.plain_memory.figures(),
                       **(self.profiler.summary() if self.profiler else {})}
        self.loop = None  # the plain side's model and optimizer state go back to the allocator


def warm_shapes(model, batches: list[dict], device: torch.device, precision: str) -> int:
    """One forward and backward per distinct batch shape, untimed, before the first timed step of
    a loop; returns how many shapes. The plain loop runs it on its batches, and an overhead pair's
    harness row on the same batches (bench/perf/real_workload.py), so both sides of a pair start
    alike. Caches keyed by shape live for the whole process (cuDNN's attention plans, the
    allocator's blocks): without this the row measured first pays every first-seen shape inside
    its timed window and the row after it on the same batches pays none. On an H200 (2026-12-02,
    before this pass) the plain loop, measured first, took 0.27 s a step against the harness's
    0.17 s on the same padded batches, and its profiled steps spent 1.56 ms of host time per cuDNN
    attention call (forward + backward) against the harness's 0.22 ms: 40 ms a step in attention
    alone. With the pass in the plain loop only, the harness became the slower side (0.127 s
    against 0.098 s), its first steps coming right after building its run.
    Gradients are dropped, no optimizer step is taken and the random state is restored: the
    weights and what the run draws next are untouched (the model is left in train mode)."""
    seen = set()
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for batch in batches:
            shape = tuple(sorted((key, tuple(value.shape)) for key, value in batch.items()))
            if shape in seen:
                continue
            seen.add(shape)
            with autocast(device, precision):
                loss = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
    synchronize(device)
    return len(seen)


class Profiler:
    """A loop observer: runs torch.profiler over the steps from `start` on (`steps` of them, or to
    the end). GPU busy = summed kernel time over wall time; far below 1 means the step waits on the
    host (launches, Python)."""

    def __init__(self, start: int, device: torch.device, steps: int | None = None):
        self.start, self.device, self.profile, self.events, self.seconds = start, device, None, None, 0.0
        self.stop = None if steps is None else start + steps  # step_end's count once the last profiled step is done

    def step_start(self, step: int) -> None:
        if step == self.start:
            self.profile = torch.profiler.profile(activities=profiler_activities(self.device))
            self.profile.__enter__()
            synchronize(self.device)  # its own clock: with train.log_every > 1 a step's step_s comes later
            self._t0 = time.perf_counter()

    def step_end(self, step: int, metrics: dict) -> None:
        if step == self.stop:
            self.close()

    def close(self) -> None:
        if self.profile is not None and self.events is None:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self._t0
            self.profile.__exit__(None, None, None)
            self.events = self.profile.key_averages()

    def summary(self) -> dict:
        if self.profile is None:
            return {}
        self.close()
        return profile_figures(self.events, self.seconds, self.device)


def compile_seconds() -> dict[str, float]:
    """torch.compile's time so far in this process, by phase (torch._dynamo.utils.compile_times:
    tracing, AOTAutograd, Inductor's lowering and codegen, waiting on kernel compiles), in seconds."""
    from torch._dynamo.utils import compile_times

    table = compile_times(repr="csv", aggregate=True)
    return {name: float(value) for name, value in zip(*table)} if table else {}


def compile_seconds_since(before: dict[str, float], at_least: float = 0.01) -> dict[str, float]:
    """The phases that took at least `at_least` seconds since `before` (a compile_seconds())."""
    spent = {name: value - before.get(name, 0.0) for name, value in compile_seconds().items()}
    return {name: round(value, 3) for name, value in spent.items() if value >= at_least}


def profiled(result: dict) -> dict:
    """A measurement's profile figures (Profiler.summary's keys), under one key."""
    keys = ("profiled_wall_s", "gpu_busy_fraction", "profile_table")
    return {"profile": {k: result[k] for k in keys}} if result.get("profile_table") else {}


def profiler_activities(device: torch.device) -> list:
    cuda = [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    return [torch.profiler.ProfilerActivity.CPU, *cuda]


def profile_figures(events, wall_s: float, device: torch.device) -> dict:
    """A profile's wall time, GPU busy fraction and top-25 table (torch.profiler key_averages)."""
    cuda = device.type == "cuda"
    # Kernels only: an aten op's row repeats the time of the kernels it launched, and a user
    # annotation's GPU row (e.g. "Optimizer.step#AdamW.step") spans the kernels inside it.
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                    and not getattr(e, "is_user_annotation", False)) if cuda else 0.0
    return {"profiled_wall_s": wall_s,
            "gpu_busy_fraction": kernel_us / 1e6 / wall_s if kernel_us else None,
            "profile_table": events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                          row_limit=25, max_name_column_width=60)}


def read_losses(history: list[dict]) -> list[float]:
    """The losses the run read (every step's, or every `train.log_every`-th: the others are null)."""
    return [h["loss"] for h in history if h["loss"] is not None]


def run_harness(run: Run, warmup: int, steps: int, profile_steps: int = 0) -> dict:
    """Train the built `run` for warm-up + timed (+ profiled) steps; the figures come from the
    run's own step timer and memory phase, exactly what its result.json would say."""
    profiler = Profiler(warmup + steps, run.device)
    run.train(until=warmup + steps + profile_steps, observers=[profiler] if profile_steps else ())
    timer, accum = run.timer, run.cfg.train.grad_accum
    batches = run.lab_batches[:(warmup + steps) * accum]
    tokens = [sum(real_tokens(b) for b in batches[i:i + accum]) for i in range(0, len(batches), accum)]
    result = {**_timing(timer.step_seconds[:warmup + steps], tokens, warmup),
              "peak_allocated_gib": run.train_peaks["allocated_gib"], "peak_reserved_gib": run.train_peaks["reserved_gib"],
              "alloc_retries": run.train_peaks["alloc_retries"], "losses": read_losses(run.history),
              "final_loss": run.final_loss, "trainable_params": sum(p.numel() for p in run.params),
              "blocks": getattr(run.method, "blocks", None), "step_seconds": timer.step_seconds[:warmup + steps],
              **profiler.summary()}
    return result


def build_run(cfg, method=None, steps: int = 0) -> Run:
    """The run of `cfg` (as `slmbench` builds it), with the batches its first `steps` steps will see."""
    run = Run.build(cfg, method=method)
    run.lab_batches = draw_batches(run, steps * cfg.train.grad_accum)
    return run


def run_eval(run: Run, engine: str, batch_size: int, max_new_tokens: int) -> tuple[dict, list[str]]:
    """Greedy generation of the run's eval prompts through the product's engine (bench/eval),
    timed end to end (tokenizing, sorting, prefill, graph capture, decode, detokenizing)."""
    from bench.data.batching import build_prompt

    memory = PhaseMemory(run.device)
    memory.start()
    examples = [ex for exs in run.task.eval_sets().values() for ex in exs]
    if run.cfg.eval.limit is not None:
        examples = examples[:run.cfg.eval.limit]
    prompts = [build_prompt(run.tokenizer, ex.prompt, run.task.use_chat_template) for ex in examples]
    eval_cfg = OmegaConf.merge(run.cfg.eval, {"engine": engine, "batch_size": batch_size, "max_new_tokens": max_new_tokens})
    synchronize(run.device)
    start = time.perf_counter()
    texts = generate_with_engine(run.model, run.tokenizer, prompts, eval_cfg, run.device, run.precision,
                                 desc=f"eval {engine}")
    synchronize(run.device)
    wall = time.perf_counter() - start
    prompt_tokens = [len(ids) for ids in run.tokenizer(prompts)["input_ids"]]
    return {"engine": engine, "prompts": len(prompts), "batch_size": batch_size, "max_new_tokens": max_new_tokens,
            "cuda_graphs": (eval_cfg.cuda_graphs and run.device.type == "cuda") if engine == "static" else None,
            "wall_s": wall, "prompts_per_s": len(prompts) / wall,
            "generated_tokens_per_s": len(prompts) * max_new_tokens / wall, "precision": run.precision,
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens), "max_prompt_tokens": max(prompt_tokens),
            **_memory(memory)}, texts


def run_harness_window(run: Run, warmup: int, steps: int, until: int | None = None,
                       twin: PlainTurns | None = None) -> dict:
    """Train the built `run` to `until` (default: its end, e.g. the whole epoch). Per-step figures
    come from the timed window (steps `warmup .. warmup + steps`, the steps a plain loop fed the
    same batches is timed on); `epoch_s` is the whole training, its first step (compilation, graph
    capture, allocator warm-up) also reported alone. Tokens count real (non-padding) tokens.
    `twin`: the plain side of an overhead pair, taking turns with the run (its figures:
    `twin.figures()`; then the run's peak memory and cudaMallocs are its own side's, PlainTurns)."""
    until = run.total_steps if until is None else until
    accum = run.cfg.train.grad_accum
    batches = draw_batches(run, until * accum)
    with HostActivity() as host:
        if twin is not None:
            twin.begin(host)
        run.train(until=until, observers=[twin] if twin is not None else ())
        if twin is not None:
            twin.end()
    memory = (twin.harness_memory.figures() if twin is not None else
              {"peak_gpu_gib": run.train_peaks["allocated_gib"], "device_mallocs": run.train_peaks["device_mallocs"]})
    tokens = [sum(real_tokens(b) for b in batches[i:i + accum]) for i in range(0, len(batches), accum)]
    seconds = run.timer.step_seconds
    whole = sum(seconds[warmup:])
    seen = [0, *itertools.accumulate(tokens)]  # real tokens trained on before each step
    return {**_timing(seconds[:warmup + steps], tokens[:warmup + steps], warmup),
            "peak_gpu_gib": memory["peak_gpu_gib"], "steps_trained": len(seconds),
            "device_mallocs": memory["device_mallocs"],  # over every step trained, not the window only
            "epoch_s": sum(seconds) if until == run.total_steps else None,
            "tokens_per_s_after_warmup": sum(tokens[warmup:]) / whole if whole else None,
            "real_tokens_per_step": sum(tokens) / len(tokens) if tokens else None,
            "padding_fraction": padding_fraction(batches), "final_loss": run.final_loss,
            "host": {**host.summary(), "steps": len(seconds)},
            "step_seconds": seconds[:warmup + steps],  # the timed window, warm-up first
            "losses": read_losses(run.history),
            # Each read loss against the real tokens trained on once its step is done (train.log_every).
            "loss_curve": {"tokens": [seen[h["step"]] for h in run.history if h["loss"] is not None],
                           "loss": read_losses(run.history)}}


def timed_generation(run: Run, prompts: list[str], engine: str, batch_size: int, precision: str) -> tuple[float, list[str]]:
    """Greedy generation as `Run.evaluate` runs it (the run's stop tokens and the task's stop
    strings, texts cut at them), timed end to end; `precision` may differ from the run's."""
    eval_cfg = OmegaConf.merge(run.cfg.eval, {"engine": engine, "batch_size": batch_size})
    stop_ids = stop_token_ids(run.model, run.tokenizer)
    synchronize(run.device)
    start = time.perf_counter()
    texts = generate_with_engine(run.model, run.tokenizer, prompts, eval_cfg, run.device, precision,
                                 desc=f"eval {engine} {precision}", stop_ids=stop_ids,
                                 stop_strings=run.task.stop_strings)
    synchronize(run.device)
    return time.perf_counter() - start, [cut_at_stop_strings(t, run.task.stop_strings) for t in texts]


class StepClock(TrainerCallback):
    """HF Trainer callback: wall-clock of each optimizer step between device syncs."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._t0 = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._t0)


class ExampleDataset(torch.utils.data.Dataset):
    """The run's tokenized examples as HF Trainer reads them (`input_ids` gives group_by_length its lengths)."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


def run_hf_trainer(model, examples, pad_token_id: int, settings: dict, warmup: int, device: torch.device) -> dict:
    """HF `Trainer` on the run's tokenized examples with `settings` (TrainingArguments), batches
    right-padded by the harness's own `collate`; real tokens counted as the collator makes them."""
    import tempfile

    memory = PhaseMemory(device)
    memory.start()
    step_tokens: list[int] = []

    def collator(items: list[dict]) -> dict[str, torch.Tensor]:
        batch = collate([TokenizedExample(i["input_ids"], i["labels"]) for i in items], pad_token_id)
        step_tokens.append(real_tokens(batch))
        return batch

    clock = StepClock(device)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, args=TrainingArguments(output_dir=out, **settings), data_collator=collator,
                          train_dataset=ExampleDataset(examples), callbacks=[clock])
        trainer.train()
    # The dataloader may collate a batch ahead of the step that trains on it: the first steps' counts hold.
    result = {**_timing(clock.seconds, step_tokens[:len(clock.seconds)], warmup),
              "peak_gpu_gib": memory.peaks()["allocated_gib"], "steps_trained": len(clock.seconds)}
    del trainer
    return result
