"""LoRA through peft: the base weights are frozen, adapters on the decoder's linear layers train."""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from bench.models.loading import remove_embedding_grad_hooks
from bench.errors import ConfigError
from methods.base import Method, MethodContext


class LoRA(Method):
    # The adapters train on every step, the base stays frozen, and peft adds no hooks (the embedding
    # one is removed in prepare): the decoder may be captured once and replayed (train.cuda_graphs).
    cuda_graph_safe = True

    def __init__(self, *, r: int, lora_alpha: float, lora_dropout: float, target_modules: list[str],
                 use_rslora: bool):
        if r <= 0:
            raise ConfigError(f"method.r must be positive, got {r}")
        if lora_alpha <= 0:
            raise ConfigError(f"method.lora_alpha must be positive, got {lora_alpha}")
        if not 0 <= lora_dropout < 1:
            raise ConfigError(f"method.lora_dropout must be in [0, 1), got {lora_dropout}")
        if not target_modules:
            raise ConfigError("method.target_modules names no module; give the linear layers to adapt")
        self.peft_config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(target_modules),
            use_rslora=use_rslora,
            task_type="CAUSAL_LM",
        )

    def prepare(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        super().prepare(model, ctx)
        peft_model = get_peft_model(model, self.peft_config)
        remove_embedding_grad_hooks(peft_model)  # peft re-forces grad on the embedding output
        return peft_model
