"""The static-cache engine gives the same greedy tokens as HF `generate` (CPU, tiny models)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.eval.evaluate import generate_hf as hf_generate
from bench.eval.static_engine import StaticBatchGenerator, generate_static
from bench.models.loading import build_tiny
from bench.models.tokenizer import build_arithmetic_tokenizer

PROMPTS = ["12+7=", "3-1=", "(4+5)*2-11=", "9=", "100-99+1=", "7#3=", "1+1+1+1+1+1+1="]
CPU = torch.device("cpu")


def tiny_model(arch: str, tokenizer) -> torch.nn.Module:
    cfg = OmegaConf.create({"arch": arch, "dims": {"hidden_size": 64, "intermediate_size": 128,
                                                    "num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2, "max_position_embeddings": 128}})
    torch.manual_seed(0)
    model = build_tiny(cfg, tokenizer)
    # A wider init than HF's 0.02 so logits are decisive (random near-ties would test rounding, not logic)
    # and some rows hit eos early (the finished-row padding path).
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("arch", ["qwen2", "llama", "phi3"])
def test_static_engine_matches_hf_generate(arch):
    tokenizer = build_arithmetic_tokenizer()
    model = tiny_model(arch, tokenizer)
    expected = hf_generate(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4, device=CPU, precision="fp32")
    got = generate_static(model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=3, device=CPU, precision="fp32")
    assert got == expected
    assert len(set(got)) > 1  # the prompts lead to different generations, so order matters


def test_static_engine_pads_rows_after_eos():
    tokenizer = build_arithmetic_tokenizer()
    model = tiny_model("llama", tokenizer)
    with torch.no_grad():  # push eos up so every row ends early
        model.lm_head.weight[tokenizer.eos_token_id] += 50.0 * model.model.norm.weight.sign()
    enc = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True)
    engine = StaticBatchGenerator(model, rows=2, cache_len=enc["input_ids"].shape[1] + 5,
                                  pad_id=tokenizer.pad_token_id, stop_ids=[tokenizer.eos_token_id],
                                  device=CPU, precision="fp32", cuda_graphs=False)
    tokens = engine.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=5)
    reference = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id)[:, enc["input_ids"].shape[1]:]
    # HF stops once every row is done; the engine pads to max_new_tokens.
    reference = torch.nn.functional.pad(reference, (0, 5 - reference.shape[1]), value=tokenizer.pad_token_id)
    assert tokens.tolist() == reference.tolist()
    for row in tokens.tolist():
        assert tokenizer.eos_token_id in row[:-1]  # the row ended early...
        after = row[row.index(tokenizer.eos_token_id) + 1:]
        assert after == [tokenizer.pad_token_id] * len(after)  # ...and was padded after its eos


def test_static_engine_rejects_a_batch_that_does_not_fit():
    tokenizer = build_arithmetic_tokenizer()
    model = tiny_model("qwen2", tokenizer)
    engine = StaticBatchGenerator(model, rows=2, cache_len=8, pad_id=0, stop_ids=[2], device=CPU,
                                  precision="fp32", cuda_graphs=False)
    with pytest.raises(ValueError, match="does not fit"):
        engine.generate(torch.ones(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.long), max_new_tokens=4)
