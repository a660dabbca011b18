"""The decoder made faster, for every method: compiled or replayed, and Inductor's workers started early.

- `compile_decoder_layers` (`train.compile`): each decoder layer compiled with `torch.compile`
  (regional compilation: one small graph reused by every layer, so compiling takes seconds, not
  minutes); `eager_decoder_layers` sets the compiled calls aside for evaluation.
- `DecoderGraph` (`train.cuda_graphs`): the decoder's forward and backward replayed as two CUDA
  graphs; what is left of a step on the host is the chunked head (bench/loss.py), the optimizer
  and the loop.
- `start_compile_workers`: Inductor's kernel-compiling processes started while the run is set up.
- `CompileAhead`: what the first training step would compile that needs no model (Triton's driver,
  Inductor's first graph) or only the model's head (the chunked loss's kernel), compiled in a
  thread while the run is set up; the first step waits for it.

The loss (bench/loss.py) takes a `DecoderGraph` as its decoder; nothing here computes a loss.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

import torch

from bench.errors import ConfigError
from bench.models.loading import causal_lm, decoder_layers
from bench.runtime import INDUCTOR_OPTIONS

log = logging.getLogger(__name__)

# train.cuda_graphs: true (refused where the decoder cannot be replayed: bench/config/checks.py),
# false, or auto (replayed where it can be: a CUDA device and a config and method that allow it,
# so one sweep over every method replays full's and LoRA's decoders; the run logs why not where not).
CUDA_GRAPH_SETTINGS = (False, True, "auto")


class _DecoderHidden(torch.nn.Module):
    """The callable that is captured: (input_ids, position_ids) -> the decoder's last hidden states."""

    def __init__(self, decoder: torch.nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state


class DecoderGraph:
    """`train.cuda_graphs`: the decoder's forward and its backward, each replayed as one CUDA graph.

    Why: at SmolLM2-135M's size a packed step is launch-bound. The decoder's 30 layers launch about
    1,300 kernels a step, each dispatched from Python (eager ops or Inductor's wrapper code), and the
    host took about twice the GPU's time (47% GPU busy, docs/performance-analysis.md). Replayed, the
    whole decoder is two launches; the chunked head (whose row count follows the batch's loss tokens),
    the optimizer and the loop stay eager.

    How: `torch.cuda.make_graphed_callables` on the first call (inside the first training step, so
    its warm-up and capture count in the run's time, as compiling does), with that batch's shapes.
    Packed batches all have one shape (bench/data/packing.py); another shape is refused. Under
    `train.compile` the compiled layers are what is captured (they compile in the warm-up passes).
    transformers skips its one host read of the packed mask during capture (`is_tracing` covers
    stream capture).

    What it requires (bench/config/checks.py refuses the rest at start): packed batches and the
    chunked loss (the graph ends at the hidden states); one micro-batch per step (the graph's
    gradient buffers become the parameters' `.grad`, so a second backward would overwrite the first's);
    no gradient checkpointing; a method whose parameters, `requires_grad` flags and hooks stay as they
    were at capture (`Method.cuda_graph_safe`: hooks added to the decoder run only while capturing);
    a CUDA device (here, at the first call)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        if device.type != "cuda":
            raise ConfigError(f"train.cuda_graphs=true needs a CUDA device; this run's device is {device}")
        self.decoder = causal_lm(model).get_decoder()
        self.graphed: torch.nn.Module | None = None
        self.shapes: tuple[torch.Size, torch.Size] | None = None
        self.capture_seconds: float | None = None  # warm-up passes (compiling, under train.compile) and capture

    def __call__(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        shapes = (input_ids.shape, position_ids.shape)
        if self.graphed is None:
            start = time.perf_counter()
            self.graphed, self.shapes = self._capture(input_ids, position_ids), shapes
            torch.cuda.synchronize(input_ids.device)
            self.capture_seconds = time.perf_counter() - start
        elif shapes != self.shapes:
            raise RuntimeError(f"train.cuda_graphs: a batch of shape {tuple(input_ids.shape)} after a capture at "
                               f"{tuple(self.shapes[0])}; the replayed decoder needs one shape (train.batching=packed)")
        return self.graphed(input_ids, position_ids)

    def release(self) -> None:
        """Training is over: drop the graphs, so their private memory pool (the decoder's saved
        activations and gradient buffers at the captured shape) can go back to the device
        (`Run.release_training_memory`). `capture_seconds` stays: the record says what ran."""
        self.graphed = None

    def _capture(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.nn.Module:
        device_type = input_ids.device.type
        # make_graphed_callables refuses autocast's weight-cast cache: the casts become graph kernels.
        with torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                            enabled=torch.is_autocast_enabled(device_type), cache_enabled=False):
            return torch.cuda.make_graphed_callables(_DecoderHidden(self.decoder), (input_ids, position_ids),
                                                     allow_unused_input=True)


def start_compile_workers(train_cfg, device: torch.device) -> None:
    """Start Inductor's kernel-compiling worker processes now, if the run's training compiles
    (train.compile's layers; on CUDA the chunked loss's kernel, `ChunkedLinearCrossEntropy`).
    Inductor starts them (one per core, each importing torch and Triton) when the first graph
    reaches it (torch/_dynamo/backends/inductor.py calls `maybe_warm_pool`), that is inside a run's
    first training step; started when the run is set up, they boot while the model loads and the
    examples are tokenized. Inductor's own hook: TORCH_WARM_POOL=0 and a single compile thread
    still turn the pool off."""
    if not compiles_on_cuda(train_cfg, device):
        return
    from torch._inductor.async_compile import maybe_warm_pool

    maybe_warm_pool()


def compiles_on_cuda(train_cfg, device: torch.device) -> bool:
    """Whether a CUDA run's training compiles: train.compile's layers, or the chunked loss's kernel
    (bench/loss.py compiles it on CUDA only)."""
    return device.type == "cuda" and bool(train_cfg.compile or train_cfg.fast_path == "chunked_ce")


class CompileAhead:
    """Compiles, in one background thread and in the order submitted, what a run's first training
    step would otherwise compile on its critical path; `wait` (the first step calls it, so any wait
    counts in the run's time) joins it.

    Why: a compile with empty caches (a sweep's first job) spends its first seconds on work that
    does not depend on the decoder's graph: building Triton's driver module (C, with gcc),
    Inductor's first graph in the process (its lazy imports and the pattern matcher's pattern
    registration make a process's first graph the slowest to compile) and the chunked loss's
    kernel, which needs only the head's shape. Done in a thread, they overlap the model's loading
    and the examples' tokenizing: the C compilers run in child processes, and torch's ops and the
    file reads release the GIL. What it saves, and what it adds to the set-up: docs/performance-analysis.md,
    'The cold epoch: compiled ahead while the run is set up'.

    A graph compiled here is the one the step calls: dynamo keeps it on the function's code object,
    whatever thread compiled it, and its guards (shapes' specializations, grad mode, dtypes) are
    those of the step's call. What failed here is logged with its traceback; the first step then
    compiles it itself, and fails there, loudly, if it cannot. `record()` is result.json's
    compile.ahead: each part compiled ahead with its seconds, in order, and how long the first step waited."""

    def __init__(self):
        self._threads: list[threading.Thread] = []
        self.seconds: dict[str, float] = {}
        self.waited_s: float | None = None

    def submit(self, name: str, fn) -> None:
        previous = self._threads[-1] if self._threads else None
        thread = threading.Thread(target=self._compile, args=(name, fn, previous), name=f"compile-ahead:{name}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _compile(self, name: str, fn, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()  # one at a time: dynamo compiles under one lock anyway
        start = time.perf_counter()
        try:
            fn()
        except Exception:
            log.warning("compiling %s ahead, while the run is set up, failed; the first training step compiles "
                        "it itself", name, exc_info=True)
        self.seconds[name] = round(time.perf_counter() - start, 3)

    def wait(self) -> None:
        """Join every compile submitted (once; later calls return at once). The first training step
        calls it before its forward: a CUDA graph's capture must not see another thread's kernels."""
        if self.waited_s is not None:
            return
        start = time.perf_counter()
        for thread in self._threads:
            thread.join()
        self.waited_s = round(time.perf_counter() - start, 3)

    def record(self) -> dict:
        # seconds' keys, in the order compiled, are what was compiled ahead
        return {"seconds": dict(self.seconds), "first_step_waited_s": self.waited_s}


def build_triton_driver() -> None:
    """Triton's CUDA driver module (`cuda_utils`, C that Triton builds with gcc and keeps under
    TRITON_CACHE_DIR, the sweep's cache: bench/runtime.py use_compile_caches) built now, not by the
    first compile. The property builds and loads the module."""
    from triton.runtime.driver import driver

    driver.active.utils  # noqa: B018


def _first_graph(x: torch.Tensor) -> torch.Tensor:
    return (torch.nn.functional.silu(x * 2.0) + x).sum()


def compile_first_graph(device: torch.device) -> None:
    """A throwaway graph through everything a training step's compile goes through the first time
    in a process: dynamo, AOT autograd's joint graph and partitioner, Inductor's forward and (lazy)
    backward compiles with the harness's options, a Triton kernel built and launched."""
    # no random numbers: this thread must not move the generators the run's own draws use
    x = torch.linspace(-1.0, 1.0, 64 * 64, device=device).view(64, 64).requires_grad_()
    torch.compile(_first_graph, options=INDUCTOR_OPTIONS)(x).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compile_decoder_layers(model: torch.nn.Module, backend: str = "inductor") -> None:
    """`train.compile`: compile every decoder layer in place (works under peft and checkpointing).
    All layers share one graph as long as the forward passes `use_cache=False` (training_loss
    does); with a cache, each layer compiles anew and past torch._dynamo's recompile limit (8) the
    remaining layers silently run eager (Llama-3.2-1B: 8 of 16). Inductor compiles them with
    bench/runtime.py INDUCTOR_OPTIONS.

    Dynamo checks every parameter's guards on each call (requires_grad among them): the block
    methods flip requires_grad between steps (methods/blocks.py BlockActivation), and under dynamo's
    default (torch/_dynamo/config.py skip_tensor_guards_with_matching_dict_tags) a layer whose
    attribute dict has not changed skips them, so on torch 2.11 a layer unfrozen again could run
    the graph compiled while it was frozen and get no gradient
    (docs/perf/compile_guards/starved_blocks.py). The setting is the process's: dynamo has no other."""
    torch._dynamo.config.skip_tensor_guards_with_matching_dict_tags = False
    options = {"options": INDUCTOR_OPTIONS} if backend == "inductor" else {}  # tests' CPU backends take none
    for layer in decoder_layers(model):
        layer.compile(backend=backend, **options)


@contextlib.contextmanager
def eager_decoder_layers(model: torch.nn.Module):
    """Within: layers compiled by `compile_decoder_layers` run their plain forward (torch's
    `Module.compile` keeps the compiled call in `_compiled_call_impl`; it is set aside and put back).

    For evaluation after `train.compile`: generation calls the layers with a KV cache and new
    shapes, so each compiled layer would compile again, and past dynamo's recompile limit (8) the
    rest run eager anyway: slower than uncompiled (docs/performance-analysis.md, 'Measurements
    behind choices in the code'). And a kept model evaluated again (uncompiled) would not see the
    same numerics."""
    layers = [layer for layer in decoder_layers(model) if layer._compiled_call_impl is not None]
    compiled = [layer._compiled_call_impl for layer in layers]
    for layer in layers:
        layer._compiled_call_impl = None
    try:
        yield
    finally:
        for layer, call in zip(layers, compiled):
            layer._compiled_call_impl = call
