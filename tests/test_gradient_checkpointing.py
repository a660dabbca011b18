"""Gradient checkpointing (non-reentrant, as bench/run/recipe.py enables it) with full FT and LoRA on a
tiny real architecture: gradients reach what trains, and nothing forces grad on the embedding
output (peft's get_peft_model would: methods/lora.py removes its hook)."""
from __future__ import annotations

import pytest
import torch

from bench.models.loading import enable_gradient_checkpointing, load_model, load_tokenizer
from methods.base import MethodContext
from methods.full import FullFineTuning
from methods.lora import LoRA
from tests.conftest import HUB_TOKENIZERS, compose_config

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)


def _setup(method):
    cfg = compose_config("model=tiny-qwen2.5").model
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, seed=0)
    enable_gradient_checkpointing(model)  # as bench/run/recipe.py does
    ctx = MethodContext(device=torch.device("cpu"), total_steps=1, steps_per_epoch=1,
                        gradient_checkpointing=True, seed=0)
    model = method.prepare(model, ctx)
    model.train()
    seen = {}
    model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: seen.__setitem__("requires_grad", output.requires_grad))
    batch = tokenizer(["Question: 1+1?\nAnswer: 2", "Question: 2+2?\nAnswer: 4"], return_tensors="pt", padding=True)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    return model, seen


def test_full_finetuning_under_checkpointing():
    model, seen = _setup(FullFineTuning())
    assert model.is_gradient_checkpointing
    assert seen["requires_grad"]  # the embedding weight trains, so its output needs grad by nature
    assert all(p.grad is not None for p in model.parameters())


def test_lora_under_checkpointing_forces_no_grad_on_embedding_output():
    model, seen = _setup(LoRA(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], use_rslora=False))
    assert model.get_base_model().is_gradient_checkpointing
    assert seen["requires_grad"] is False
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    # lora_B starts at zero, so only B gets a nonzero gradient on the first step (A's is B^T-weighted).
    assert lora and all(p.grad is not None for p in lora.values())   # the lowest layer's adapters included
    assert all(p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)


def test_transformers_and_peft_would_force_it_without_our_fixes():
    """Guards the premises of bench/models.enable_gradient_checkpointing and methods/lora.py: if
    transformers or peft stop registering the hook, the fixes can go."""
    from peft import LoraConfig, get_peft_model

    cfg = compose_config("model=tiny-qwen2.5").model
    model = load_model(cfg, load_tokenizer(cfg), seed=0)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model._require_grads_hooks                      # transformers 5 registers it
    model.disable_input_require_grads()
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert peft_model.get_base_model()._require_grads_hooks  # and peft registers it again
