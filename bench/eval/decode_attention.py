"""Decode-step attention that reads the KV cache as it is stored, one copy per key/value head.

Why. With an attention mask (both static engines pass one), transformers' sdpa path on CUDA cannot
let SDPA handle grouped-query attention (`enable_gqa` with a mask falls back to the math kernel), so
transformers <= 5.17 (the device's) repeats every key/value head `num_key_value_groups` times
(`repeat_kv`: a copy of the whole cache, keys and values, in every layer at every decode step).
Profiled, those two copies took most of the static engine's GPU time (docs/performance-analysis.md,
"Measurements behind choices in the code").

What. A single query token per row lets the query heads of one group stand in the query-length
dimension instead: (rows, heads, 1, dim) -> (rows, kv_heads, groups, dim). SDPA then attends each
group's queries to its own key/value head, the mask (rows, 1, 1, cache) broadcasts over both, and
nothing is copied. The arithmetic per head is the same (newer transformers do the same,
`pack_gqa` in integrations/sdpa_attention.py). Every other call (prefill, training, a mask with
per-head rows) goes to transformers' own sdpa function unchanged.

How. `decode_attention(model)` switches the model's `_attn_implementation` from "sdpa" to this
function for the duration of a generation, and back; other implementations are left alone.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

NAME = "slmbench_sdpa_decode"


def sdpa_decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; returns (rows, 1, heads, dim) as sdpa does."""
    groups = getattr(module, "num_key_value_groups", 1)
    per_head_mask = attention_mask is not None and attention_mask.shape[1] != 1
    if query.shape[2] != 1 or groups == 1 or per_head_mask or dropout or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    rows, heads, _, dim = query.shape
    # repeat_kv's layout: query head h reads key/value head h // groups.
    grouped = query.reshape(rows, heads // groups, groups, dim)
    mask = attention_mask[:, :, :, :key.shape[-2]] if attention_mask is not None else None
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sdpa_decode_attention)
# Mask creation looks the implementation up too; the engines pass prepared 4-D masks, which it
# returns as they are, but the name must be known.
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextlib.contextmanager
def decode_attention(model: torch.nn.Module):
    """Within: a model on transformers' "sdpa" attention decodes through `sdpa_decode_attention`."""
    config = model.config
    if config._attn_implementation != "sdpa":
        yield
        return
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"
