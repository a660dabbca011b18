"""bench/models/loading.py: the tiny Qwen2, Llama and Phi3 (real classes) each run a training step."""
from __future__ import annotations

import pytest
from transformers import LlamaForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM

from bench.cli import run_job
from conftest import compose_config

CLASSES = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM, "phi3": Phi3ForCausalLM}


@pytest.mark.parametrize("arch", sorted(CLASSES))
def test_tiny_model_runs_a_step(tmp_path, arch):
    from bench.models.loading import build_tiny, load_tokenizer

    cfg = compose_config(f"model=tiny-{arch}", "model.base=null", "wandb.mode=disabled",
                         "train.max_steps=2", "eval.limit=4")
    assert isinstance(build_tiny(cfg.model, load_tokenizer(cfg.model)), CLASSES[arch])
    result = run_job(cfg, tmp_path, {"method": "full", "model": f"tiny-{arch}", "task": "arithmetic"}, None)
    assert result["status"] == "ok" and result["metrics"]["train_steps"] == 2
    assert result["metrics"]["final_train_loss"] > 0
