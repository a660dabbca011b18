"""Tokenizer + model: tiny (built from config), hub id, local dir, random-init real shape."""
from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from bench.tokenizer import build_arithmetic_tokenizer

log = logging.getLogger(__name__)

# The real classes of the three target models, so tiny models exercise the same code paths.
TINY_ARCHITECTURES = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
}
SOURCES = ("tiny", "hub", "local")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(model_cfg) -> Any:
    """The synthetic task's tokenizer for `tokenizer: arithmetic`, else the hub id / local dir."""
    name = model_cfg.get("tokenizer") or _weights_location(model_cfg)
    if name == "arithmetic":
        return build_arithmetic_tokenizer()
    tokenizer = AutoTokenizer.from_pretrained(
        name, trust_remote_code=bool(model_cfg.get("trust_remote_code", False))
    )
    if tokenizer.pad_token_id is None:
        # Llama-3.2 ships no pad token; eos is safe because padded positions are masked out of
        # the loss and the attention.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right; training pads itself
    return tokenizer


def _weights_location(model_cfg) -> str:
    source = model_cfg.source
    if source == "local":
        if not model_cfg.get("path"):
            raise ValueError(f"model.source=local needs model.path (model {model_cfg.name})")
        return str(model_cfg.path)
    if source == "hub":
        return str(model_cfg.path or model_cfg.hub_id)
    raise ValueError(f"model.source={source!r}; allowed: {', '.join(SOURCES)}")


def build_tiny(model_cfg, tokenizer) -> torch.nn.Module:
    arch = model_cfg.arch
    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")
    config_cls, model_cls = TINY_ARCHITECTURES[arch]
    dims = dict(model_cfg.dims)
    config = config_cls(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **dims,
    )
    return model_cls(config)


def load_model(model_cfg, tokenizer, seed: int) -> torch.nn.Module:
    """Build or load the model in fp32 (autocast supplies bf16 compute on GPU).

    `init=random` builds the real shape from its config (hub id or local dir) with no weights
    downloaded: real memory and time without the checkpoint.
    """
    torch.manual_seed(seed)
    source = model_cfg.source
    dtype = DTYPES[model_cfg.get("dtype", "float32")]
    if source == "tiny":
        model = build_tiny(model_cfg, tokenizer)
    else:
        location = _weights_location(model_cfg)
        remote = bool(model_cfg.get("trust_remote_code", False))
        init = model_cfg.get("init", "pretrained")
        if init == "random":
            config = AutoConfig.from_pretrained(location, trust_remote_code=remote)
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
        elif init == "pretrained":
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, trust_remote_code=remote)
        else:
            raise ValueError(f"model.init={init!r}; allowed: pretrained, random")
    model = model.to(dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total): counted over unique tensors (tied embeddings count once)."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total
