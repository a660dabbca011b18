"""The optional training fast path (`train.fast_path`), usable by every method.

`chunked_ce`: the causal-LM loss without the full-vocabulary logits. HF's forward computes
logits for every position of the batch (Llama-3.2-1B, batch 8 x 512: 4,096 x 128,256 logits,
1 GiB in bf16, plus the fp32 upcast and its gradient) and keeps them for backward. Here the
decoder runs alone, only the positions whose next token carries loss are gathered, and the
head + cross-entropy run over them in chunks whose gradients are computed right away in the
forward pass (as Liger's fused linear cross-entropy does), so at most one chunk of logits
exists at any time and no logit is kept for backward. Same FLOPs as the unfused path.

`compile: true` (a separate knob) compiles each decoder layer with `torch.compile` (regional
compilation: one small graph reused by every layer, so compiling takes seconds, not minutes).
"""
from __future__ import annotations

import torch

from bench.data import IGNORE_INDEX

FAST_PATHS = ("none", "chunked_ce")


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    get_base = getattr(model, "get_base_model", None)  # peft wrapper -> the HF causal LM inside
    return get_base() if callable(get_base) else model


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over rows of CE(hidden @ weight.T, targets) / divisor, chunk by chunk; gradients are made
    in forward (at most one chunk of logits alive) and scaled by the incoming gradient in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, divisor: float, chunk_rows: int, compute_dtype):
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows].to(compute_dtype)
            t = targets[start:start + chunk_rows]
            logits = (h @ w.t()).float()  # the head's output in compute dtype, CE in fp32 as HF does
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            # d(CE)/d(logits) = softmax - onehot, over the divisor
            grad_logits = torch.softmax(logits, dim=-1)
            grad_logits[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            grad_logits = (grad_logits / divisor).to(compute_dtype)
            del logits
            grad_hidden[start:start + chunk_rows] = (grad_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.add_(grad_logits.t() @ h)  # compute-dtype product, fp32 accumulation
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.weight_dtype, ctx.has_weight_grad = weight.dtype, grad_weight is not None
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        grad_w = (grad_weight * grad_output).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden * grad_output.to(grad_hidden.dtype), grad_w, None, None, None, None


def chunked_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], num_items_in_batch: int,
                    chunk_rows: int = 1024) -> torch.Tensor:
    """The same value as `model(**batch, num_items_in_batch=n).loss` (sum of token CE / n)."""
    lm = _causal_lm(model)
    head = lm.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise ValueError(f"train.fast_path=chunked_ce needs a bias-free nn.Linear output head, "
                         f"got {type(head).__name__}")
    labels = batch["labels"]
    hidden = lm.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
    # Position i predicts token i+1: keep the positions whose next token carries loss.
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1][keep]
    compute_dtype = torch.get_autocast_dtype(rows.device.type) if torch.is_autocast_enabled(rows.device.type) \
        else head.weight.dtype
    with torch.autocast(rows.device.type, enabled=False):  # dtypes are explicit inside
        return ChunkedLinearCrossEntropy.apply(rows, head.weight, targets[keep], float(num_items_in_batch),
                                               chunk_rows, compute_dtype)


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], num_items_in_batch: int,
                  fast_path: str = "none") -> torch.Tensor:
    """The loss one micro-batch contributes to the token-weighted window loss."""
    if fast_path == "none":
        return model(**batch, num_items_in_batch=num_items_in_batch).loss
    if fast_path == "chunked_ce":
        return chunked_lm_loss(model, batch, num_items_in_batch)
    raise ValueError(f"train.fast_path={fast_path!r}; allowed: {', '.join(FAST_PATHS)}")


def compile_decoder_layers(model: torch.nn.Module) -> None:
    """`train.compile`: compile every decoder layer in place (works under peft and checkpointing)."""
    for layer in _causal_lm(model).get_decoder().layers:
        layer.compile()
