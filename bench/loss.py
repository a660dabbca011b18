"""The training loss, usable by every method: HF's own (`train.fast_path=none`) or the chunked one.

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

The decoder the loss calls may be compiled (`train.compile`) or replayed as CUDA graphs
(`train.cuda_graphs`): both live in bench/compiled.py, which this module names as a type only.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch

from bench.data.batching import IGNORE_INDEX
from bench.models.loading import causal_lm
from bench.runtime import INDUCTOR_OPTIONS, autocast

if TYPE_CHECKING:  # a type only: the graphs are built by the run (bench/run/recipe.py)
    from bench.compiled import DecoderGraph

FAST_PATHS = ("none", "chunked_ce")
CHUNK_ROWS = 512  # rows of logits alive at once


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
    # dynamic: the row count differs per batch and last chunk
    return torch.compile(_ce_chunk, dynamic=True, options=INDUCTOR_OPTIONS)


def _accumulate_product(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out (fp32) += a @ b (compute dtype). On CUDA the GEMM adds into `out` itself, in fp32
    (cuBLAS beta = 1, `out_dtype`): no head-sized product buffer (0.49 GiB on Llama-3.2-1B, held at
    the step's peak) and no separate add pass over the fp32 gradient per chunk."""
    if out.is_cuda and a.dtype != out.dtype:
        torch.addmm(out, a, b, out_dtype=out.dtype, out=out)
    else:
        out.add_(a @ b)


def compile_chunk_kernel(model: torch.nn.Module, precision: str, device: torch.device,
                         chunk_rows: int = CHUNK_ROWS) -> None:
    """Compile the chunk kernel a CUDA step of `model` calls (its first call compiles it), on a
    zero chunk of the head's vocabulary: `CompileAhead` runs this while the run is set up. The
    guards match the step's call: logits of the compute dtype (the autocast dtype under bf16, else
    the head's) that need no grad (made inside `ChunkedLinearCrossEntropy.forward`), int64
    targets, a float divisor; the rows are dynamic, `chunk_rows` is the first chunk's count."""
    head = _output_head(causal_lm(model))
    with autocast(device, precision):
        dtype = _compute_dtype(head, device)
    with torch.no_grad():
        logits = torch.zeros(chunk_rows, head.weight.shape[0], dtype=dtype, device=device)
        _compiled_ce_chunk()(logits, torch.zeros(chunk_rows, dtype=torch.long, device=device), 1000.0)


def _compute_dtype(head: torch.nn.Module, device: torch.device) -> torch.dtype:
    """The logits' dtype: autocast's where it is on (bench/runtime.py autocast), else the head's."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else head.weight.dtype


def chunk_slices(rows: int, chunk_rows: int) -> list[slice]:
    """Consecutive slices of at most `chunk_rows` rows that cover `rows` rows once, none of exactly
    one row unless `rows` is 1 (or `chunk_rows` is 2 or less). Why: torch.compile specializes a
    dynamic size on 0 and 1, so a one-row chunk is a second graph of the chunk's kernel to compile,
    inside whichever step first has one loss row more than a multiple of `chunk_rows` (its cost:
    docs/performance-analysis.md, 'Measurements behind choices in the code'). So a last chunk of one
    row takes one row from the chunk before it."""
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
                    chunk_rows: int = CHUNK_ROWS, positions: tuple[torch.Tensor, torch.Tensor] | None = None,
                    decoder_graph: "DecoderGraph | None" = None) -> torch.Tensor:
    """The same value as `model(**batch, num_items_in_batch=n).loss` (sum of token CE / n).
    `positions`: `loss_positions(labels)` already on the device (saves a synchronization).
    `decoder_graph`: the decoder replayed as CUDA graphs (train.cuda_graphs) instead of called."""
    lm = causal_lm(model)
    head = _output_head(lm)
    rows, targets = _loss_hidden(lm, batch, *(positions or (None, None)), decoder_graph=decoder_graph)
    compute_dtype = _compute_dtype(head, rows.device)
    with torch.autocast(rows.device.type, enabled=False):  # dtypes are explicit inside
        return ChunkedLinearCrossEntropy.apply(rows, head.weight, targets, float(num_items_in_batch),
                                               chunk_rows, compute_dtype)


@torch.no_grad()
def chunked_mean_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], chunk_rows: int = CHUNK_ROWS) -> float:
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
