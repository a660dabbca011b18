"""The optional training fast path (`train.fast_path`), usable by every method.

`chunked_ce`: the causal-LM loss without the full-vocabulary logits. HF's forward computes
logits for every position of the batch (Llama-3.2-1B, batch 8 x 512: 4,096 x 128,256 logits,
1 GiB in bf16, plus the fp32 upcast and its gradient) and keeps them for backward. Here the
decoder runs alone, only the positions whose next token carries loss are gathered, and the
head + cross-entropy run over them in chunks whose gradients are computed right away in the
forward pass (as Liger's fused linear cross-entropy does), so at most one chunk of logits
exists at any time and no logit is kept for backward. The head runs only over loss positions
(HF's runs over the masked prompt too), the positions are found on the host copy of the batch
(no device synchronization), and on CUDA each chunk's softmax-minus-onehot is one compiled kernel
pair instead of about seven eager passes over a chunk x vocabulary fp32 tensor.

`compile: true` (a separate knob) compiles each decoder layer with `torch.compile` (regional
compilation: one small graph reused by every layer, so compiling takes seconds, not minutes).

`cuda_graphs: true` (a third knob, `DecoderGraph`) replays the decoder's forward and backward as
two CUDA graphs: what is left of a step on the host is the chunked head, the optimizer and the loop.
"""
from __future__ import annotations

import contextlib
import functools
import time

import torch

from bench.data.batching import IGNORE_INDEX
from bench.models.loading import causal_lm, decoder_layers

FAST_PATHS = ("none", "chunked_ce")


def _ce_chunk(logits: torch.Tensor, targets: torch.Tensor, divisor: float):
    """One chunk's summed CE (fp32, as HF upcasts) and d(CE/divisor)/d(logits) = (softmax - onehot) /
    divisor, in the logits' dtype. Pointwise ops and one row reduction, no in-place write, so
    torch.compile makes it a reduction kernel and a pointwise kernel that read the bf16 logits and
    write the bf16 gradient, with no chunk x vocabulary fp32 buffer (eager: about seven passes)."""
    lse = torch.logsumexp(logits.float(), dim=-1)
    picked = logits.gather(1, targets[:, None]).squeeze(1).float()
    prob = torch.exp(logits.float() - lse[:, None])
    is_target = torch.arange(logits.shape[-1], device=logits.device)[None, :] == targets[:, None]
    grad = torch.where(is_target, prob - 1.0, prob) / divisor
    return (lse - picked).sum(), grad.to(logits.dtype)


@functools.cache
def _compiled_ce_chunk():
    return torch.compile(_ce_chunk, dynamic=True)  # the row count differs per batch and last chunk


def _accumulate_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out (fp32) += a @ b (compute dtype). On CUDA the GEMM adds into `out` itself, in fp32
    (cuBLAS beta = 1, `out_dtype`): no head-sized product buffer (0.49 GiB on Llama-3.2-1B, held at
    the step's peak) and no separate add pass over the fp32 gradient per chunk."""
    if out.is_cuda and a.dtype != out.dtype:
        torch.addmm(out, a, b, out_dtype=out.dtype, out=out)
    else:
        out.add_(a @ b)


def chunk_slices(rows: int, chunk_rows: int) -> list[slice]:
    """Consecutive slices of at most `chunk_rows` rows that cover `rows` rows once, none of exactly
    one row unless `rows` is 1 (or `chunk_rows` is 2 or less). Why: torch.compile specializes a
    dynamic size on 0 and 1, so a one-row chunk is a second graph of the chunk's kernel to compile.
    On an H200, a cold process of the reference workload spent 1.1-1.4 s on that recompile inside
    its 63rd step, the epoch's only step with 1 more loss row than a multiple of 512 (9,217); with the
    kernel eager the step took its usual time. So a last chunk of one row takes one row from the
    chunk before it."""
    starts = list(range(0, rows, chunk_rows))
    ends = [*starts[1:], rows]
    if chunk_rows > 2 and len(starts) > 1 and ends[-1] - starts[-1] == 1:
        starts[-1] -= 1
        ends[-2] -= 1
    return [slice(start, end) for start, end in zip(starts, ends)]


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, targets) / divisor, chunk by chunk; gradients are made
    in forward (at most one chunk of logits alive) and scaled by the incoming gradient in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, divisor: float, chunk_rows: int, compute_dtype):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        ce_chunk = _compiled_ce_chunk() if hidden.is_cuda else _ce_chunk
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for chunk in chunk_slices(hidden.shape[0], chunk_rows):
            h = hidden[chunk].to(compute_dtype)
            loss_sum, grad_logits = ce_chunk(h @ w.t(), targets[chunk], divisor)
            total += loss_sum
            grad_hidden[chunk] = (grad_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                _accumulate_product(grad_weight, grad_logits.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.weight_dtype, ctx.has_weight_grad = weight.dtype, grad_weight is not None
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        # in place: no second head-sized buffer (this graph is never run backward twice)
        grad_w = grad_weight.mul_(grad_output).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden * grad_output.to(grad_hidden.dtype), grad_w, None, None, None, None


def loss_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices into the (batch x seq) hidden states, their targets) of the positions whose
    next token carries loss (position i predicts token i+1). Computed where `labels` lives: on
    the host copy of a batch it costs the device no synchronization."""
    targets = labels[:, 1:]
    row, col = (targets != IGNORE_INDEX).nonzero(as_tuple=True)
    return row * labels.shape[1] + col, targets[row, col]


def _output_head(lm: torch.nn.Module) -> torch.nn.Linear:
    head = lm.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise ValueError(f"train.fast_path=chunked_ce needs a bias-free nn.Linear output head, "
                         f"got {type(head).__name__}")
    return head


def decoder_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every key of the batch but `labels`: `input_ids` and, as the batching made them,
    `attention_mask` (padded batches) or `position_ids` (packed rows, bench/data/packing.py: the
    document mask is built from them)."""
    return {key: value for key, value in batch.items() if key != "labels"}


def _loss_hidden(lm: torch.nn.Module, batch: dict[str, torch.Tensor], positions, targets, decoder_graph=None):
    """The decoder's last hidden states at the loss positions, and their targets."""
    if decoder_graph is not None:
        hidden = decoder_graph(batch["input_ids"], batch["position_ids"])
    else:
        hidden = lm.get_decoder()(**decoder_inputs(batch), use_cache=False).last_hidden_state
    if positions is None:  # on the device: one synchronization (nonzero)
        positions, targets = loss_positions(batch["labels"])
    return hidden.flatten(0, 1).index_select(0, positions), targets


def chunked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], num_items_in_batch: int,
                    chunk_rows: int = 512, positions: tuple[torch.Tensor, torch.Tensor] | None = None,
                    decoder_graph: "DecoderGraph | None" = None) -> torch.Tensor:
    """The same value as `model(**batch, num_items_in_batch=n).loss` (sum of token CE / n).
    `positions`: `loss_positions(labels)` already on the device (saves a synchronization).
    `decoder_graph`: the decoder replayed as CUDA graphs (train.cuda_graphs) instead of called."""
    lm = causal_lm(model)
    head = _output_head(lm)
    rows, targets = _loss_hidden(lm, batch, *(positions or (None, None)), decoder_graph=decoder_graph)
    compute_dtype = torch.get_autocast_dtype(rows.device.type) if torch.is_autocast_enabled(rows.device.type) \
        else head.weight.dtype
    with torch.autocast(rows.device.type, enabled=False):  # dtypes are explicit inside
        return ChunkedLinearCrossEntropy.apply(rows, head.weight, targets, float(num_items_in_batch),
                                               chunk_rows, compute_dtype)


@torch.no_grad()
def chunked_mean_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_rows: int = 512) -> float:
    """`model(**batch).loss.item()` (mean CE over loss tokens) without the full-vocabulary logits:
    for no-grad probes such as IST's rollouts, whose batch may be larger than a training batch."""
    lm = causal_lm(model)
    head = _output_head(lm)
    rows, targets = _loss_hidden(lm, batch, None, None)
    total = torch.zeros((), dtype=torch.float32, device=rows.device)
    for start in range(0, rows.shape[0], chunk_rows):
        logits = head(rows[start:start + chunk_rows]).float()
        total += torch.nn.functional.cross_entropy(logits, targets[start:start + chunk_rows], reduction="sum")
    return (total / max(1, targets.numel())).item()


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], num_items_in_batch: int,
                  fast_path: str = "none", device: torch.device | None = None,
                  decoder_graph: "DecoderGraph | None" = None) -> torch.Tensor:
    """The loss one micro-batch contributes to the token-weighted window loss. `batch` may be on
    the host: it is moved to `device` here, after the chunked path has read its loss positions.
    Every key of `batch` reaches the model (`position_ids` of packed rows included)."""
    # train.fast_path's values are checked once, at start (bench/config/checks.py): none, else chunked_ce.
    device = device or batch["input_ids"].device
    on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if fast_path == "none":
        # use_cache=False: a KV cache in training is dead weight, and its per-layer `layer_idx`
        # makes torch.compile specialize each decoder layer (train.compile: past 8 layers, eager)
        return model(**on_device, num_items_in_batch=num_items_in_batch, use_cache=False).loss
    positions = tuple(t.to(device, non_blocking=True) for t in loss_positions(batch["labels"]))
    return chunked_lm_loss(model, on_device, num_items_in_batch, positions=positions, decoder_graph=decoder_graph)


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
            from bench.errors import ConfigError
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
    if device.type != "cuda" or not (train_cfg.compile or train_cfg.fast_path == "chunked_ce"):
        return
    from torch._inductor.async_compile import maybe_warm_pool

    maybe_warm_pool()


def compile_decoder_layers(model: torch.nn.Module, backend: str = "inductor") -> None:
    """`train.compile`: compile every decoder layer in place (works under peft and checkpointing).
    All layers share one graph as long as the forward passes `use_cache=False` (training_loss
    does); with a cache, each layer compiles anew and past torch._dynamo's recompile limit (8) the
    remaining layers silently run eager (Llama-3.2-1B: 8 of 16)."""
    for layer in decoder_layers(model):
        layer.compile(backend=backend)


@contextlib.contextmanager
def eager_decoder_layers(model: torch.nn.Module):
    """Within: layers compiled by `compile_decoder_layers` run their plain forward (torch's
    `Module.compile` keeps the compiled call in `_compiled_call_impl`; it is set aside and put back).

    For evaluation after `train.compile`: generation calls the layers with a KV cache and new
    shapes, so each compiled layer would compile again, and past dynamo's recompile limit (8) the
    rest run eager anyway. On an H200 a compiled SmolLM2-135M fine-tune took 35.8 s on GSM8K's test
    set against 26.5 s for the uncompiled one (docs/perf/real_workload.json, harness_fast and
    harness_default), and a kept model evaluated again (uncompiled) would not see the same numerics."""
    layers = [layer for layer in decoder_layers(model) if layer._compiled_call_impl is not None]
    compiled = [layer._compiled_call_impl for layer in layers]
    for layer in layers:
        layer._compiled_call_impl = None
    try:
        yield
    finally:
        for layer, call in zip(layers, compiled):
            layer._compiled_call_impl = call
