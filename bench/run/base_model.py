"""The tiny base model of the embedded default: pretrained briefly on the arithmetic task family.

Fine-tuning methods only differ when they adapt a model that already knows something, so tiny
models with `base: synthetic` start from a checkpoint pretrained on the family's operators
(+, -, max, min by default) and are fine-tuned on a held-out operator. The checkpoint is built
once and cached under `cache_dir`, keyed by a hash of everything that determines it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from bench.data.batching import BatchStream, tokenize_examples
from bench.run.observers import StepTimer
from bench.models.loading import build_tiny
from bench.run.optim import build_optimizer, build_scheduler
from bench.tasks.arithmetic import ArithmeticTask
from bench.run.loop import TrainState, train
from methods.full import FullFineTuning

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the pretraining code changes what a cached checkpoint holds


def base_model_key(model_cfg, pretrain_cfg) -> str:
    """Hash of the model shape + tokenizer + pretraining recipe (not of the model's display name)."""
    shape = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k != "name"}
    recipe = OmegaConf.to_container(pretrain_cfg, resolve=True)
    blob = json.dumps({"model": shape, "pretrain": recipe, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_build_base(model_cfg, pretrain_cfg, tokenizer, cache_dir: Path) -> torch.nn.Module:
    directory = Path(cache_dir) / "base-models" / f"{model_cfg.arch}-{base_model_key(model_cfg, pretrain_cfg)}"
    directory.mkdir(parents=True, exist_ok=True)
    # One builder at a time: parallel jobs of a sweep wait for the first one's checkpoint.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "meta.json").exists():
            _pretrain(model_cfg, pretrain_cfg, tokenizer, directory)
    log.info("base model: %s", directory)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)


def _pretrain(model_cfg, pretrain_cfg, tokenizer, directory: Path) -> None:
    log.info("pretraining the tiny base model on the task family (once; cached in %s)", directory)
    torch.manual_seed(pretrain_cfg.seed)
    device = torch.device("cpu")  # tiny: CPU is the reference and keeps the cache device-independent
    task = ArithmeticTask(name="pretrain", operators=list(pretrain_cfg.operators),
                          operand_max=pretrain_cfg.operand_max, seed=pretrain_cfg.seed)
    examples = tokenize_examples(tokenizer, task.train_examples(), max_seq_len=64)
    model = build_tiny(model_cfg, tokenizer)
    method = FullFineTuning()
    optimizer = build_optimizer(method.trainable_parameters(model), pretrain_cfg, device)
    state = TrainState(model, method, optimizer, build_scheduler(optimizer, pretrain_cfg, pretrain_cfg.steps),
                       BatchStream(examples, pretrain_cfg.batch_size, tokenizer.pad_token_id, pretrain_cfg.seed))
    loss = train(state, pretrain_cfg, device, "fp32", pretrain_cfg.steps,
                 StepTimer(device, warmup_steps=0), on_step=lambda step, metrics: None)
    model.save_pretrained(directory)
    # meta.json last: its presence marks a complete checkpoint.
    (directory / "meta.json").write_text(json.dumps(
        {"final_loss": loss, "pretrain": OmegaConf.to_container(pretrain_cfg, resolve=True)}, indent=2))
