"""The chunked linear cross-entropy equals HF's loss and gradients (CPU, tiny models, fp32 and bf16)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.data import IGNORE_INDEX
from bench.fast_path import chunked_lm_loss, training_loss
from bench.models import build_tiny
from bench.tokenizer import build_arithmetic_tokenizer


def tiny(arch: str):
    tokenizer = build_arithmetic_tokenizer()
    cfg = OmegaConf.create({"arch": arch, "dims": {"hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2, "max_position_embeddings": 64}})
    torch.manual_seed(0)
    return build_tiny(cfg, tokenizer)


def batch():
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, 60, (3, 20), generator=gen)
    labels = input_ids.clone()
    labels[:, :7] = IGNORE_INDEX  # a masked prompt
    labels[2, 15:] = IGNORE_INDEX  # and right padding on one row
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 15:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["qwen2", "llama", "phi3"])
def test_chunked_loss_and_grads_equal_the_unfused_path_fp32(arch):
    model, b = tiny(arch), batch()
    n = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    ref_loss, ref_grads = loss_and_grads(model, lambda: training_loss(model, b, n, "none"))
    # chunk_rows=5: several chunks and a ragged last one
    loss, grads = loss_and_grads(model, lambda: chunked_lm_loss(model, b, n, chunk_rows=5))
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_chunked_loss_equals_the_unfused_path_under_bf16_autocast():
    model, b = tiny("llama"), batch()
    n = 2 * int((b["labels"][:, 1:] != IGNORE_INDEX).sum())  # a window's divisor larger than this batch's count
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = training_loss(model, b, n, "none")
        got = training_loss(model, b, n, "chunked_ce")
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref.float(), rtol=2e-2)  # bf16 tolerance


def test_unknown_fast_path_is_refused():
    model, b = tiny("qwen2"), batch()
    with pytest.raises(ValueError, match="train.fast_path='fused'; allowed: none, chunked_ce"):
        training_loss(model, b, 10, "fused")
