"""methods/lora.py: only adapters train; the trainable count is peft's own."""
from __future__ import annotations

import torch
from hydra.utils import instantiate

from bench.models.loading import build_tiny
from bench.run.optim import build_optimizer
from bench.models.tokenizer import build_arithmetic_tokenizer
from conftest import compose_config
from methods.base import MethodContext


def _tiny_lora(arch: str):
    cfg = compose_config(f"model=tiny-{arch}", "method=lora")
    tokenizer = build_arithmetic_tokenizer()
    torch.manual_seed(0)
    model = build_tiny(cfg.model, tokenizer)
    method = instantiate(cfg.method)
    ctx = MethodContext(device=torch.device("cpu"), total_steps=1, steps_per_epoch=1,
                        gradient_checkpointing=False, seed=0)
    model = method.prepare(model, ctx)
    return cfg, tokenizer, model, method


def test_only_adapter_weights_change_after_a_step():
    for arch in ("llama", "phi3"):
        cfg, tokenizer, model, method = _tiny_lora(arch)
        params = method.trainable_parameters(model)
        optimizer = build_optimizer(params, cfg.train, torch.device("cpu"))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        batch = tokenizer(["12+3=15", "7#2=10"], return_tensors="pt", padding=True)
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all("lora_" in n for n in changed), f"{arch}: non-adapter weights changed"
        # lora_B starts at zero, so after one step every adapter B has moved.
        assert {n for n in before if "lora_B" in n} <= changed
        untouched = [n for n in before if "lora_" not in n]
        assert all(torch.equal(dict(model.named_parameters())[n], before[n]) for n in untouched)


def test_trainable_count_equals_peft_and_covers_every_decoder_linear():
    for arch, expected in (("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
                           ("phi3", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"})):
        _, _, model, method = _tiny_lora(arch)
        peft_trainable, _ = model.get_nb_trainable_parameters()
        assert sum(p.numel() for p in method.trainable_parameters(model)) == peft_trainable
        wrapped = {name.split(".")[-4] for name, _ in model.named_parameters() if name.endswith("lora_A.default.weight")}
        assert wrapped == expected
