"""bench/eval/decode_attention.py: a decode step attends to each key/value head once instead of
repeating the cache per head group, with the arithmetic of repeat_kv + SDPA; both static engines
decode through it and give HF generate's tokens (CPU, fp32)."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from bench.eval import decode_attention as decode
from bench.eval.evaluate import generate_hf
from bench.eval.static_engine import generate_static
from bench.models.tokenizer import build_arithmetic_tokenizer
from tests.test_generate import PROMPTS, tiny_model

CPU = torch.device("cpu")


def repeated(x: torch.Tensor, groups: int) -> torch.Tensor:
    """transformers' repeat_kv: key/value head k serves query heads k*groups .. k*groups + groups-1."""
    return x.repeat_interleave(groups, dim=1)


@pytest.mark.parametrize("groups", [1, 3])
def test_one_query_token_equals_repeated_heads(groups):
    torch.manual_seed(0)
    rows, kv_heads, cache, dim = 5, 2, 23, 16
    module = types.SimpleNamespace(num_key_value_groups=groups, is_causal=True)
    query = torch.randn(rows, kv_heads * groups, 1, dim)
    key, value = torch.randn(rows, kv_heads, cache, dim), torch.randn(rows, kv_heads, cache, dim)
    mask = torch.rand(rows, 1, 1, cache) > 0.4
    mask[:, :, :, 0] = True  # every row attends to something
    got, _ = decode.sdpa_decode_attention(module, query, key, value, mask, scaling=dim ** -0.5)
    expected = F.scaled_dot_product_attention(query, repeated(key, groups), repeated(value, groups), attn_mask=mask,
                                              scale=dim ** -0.5).transpose(1, 2)
    assert got.shape == (rows, 1, kv_heads * groups, dim)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_other_calls_go_to_transformers_sdpa(monkeypatch):
    """Prefill (several query tokens) is transformers' own path, untouched."""
    seen = []
    monkeypatch.setattr(decode, "sdpa_attention_forward", lambda *a, **k: seen.append(a[1].shape) or ("hf", None))
    module = types.SimpleNamespace(num_key_value_groups=2, is_causal=True)
    query, key = torch.randn(2, 4, 7, 8), torch.randn(2, 2, 7, 8)
    assert decode.sdpa_decode_attention(module, query, key, key, None)[0] == "hf" and seen == [(2, 4, 7, 8)]


@pytest.mark.parametrize("refill", [True, False])
def test_static_engines_decode_through_it_and_match_hf_generate(refill, monkeypatch):
    tokenizer = build_arithmetic_tokenizer()
    model = tiny_model("qwen2", tokenizer)  # 4 query heads on 2 key/value heads
    model.config._attn_implementation = "sdpa"
    expected = generate_hf(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=4, device=CPU, precision="fp32")
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counted(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return sdpa(query, *args, **kwargs)
    monkeypatch.setattr(decode, "F", types.SimpleNamespace(scaled_dot_product_attention=counted))
    got = generate_static(model, tokenizer, PROMPTS, max_new_tokens=10, batch_size=3, device=CPU, precision="fp32",
                          refill=refill)
    assert got == expected
    assert calls and all(shape[1:3] == (2, 2) for shape in calls), "decode steps: 2 kv heads x 2 grouped queries"
    assert model.config._attn_implementation == "sdpa", "the model's attention is restored after generation"
