"""The tiny base model of the embedded default: pretrained briefly on the arithmetic task family.

Fine-tuning methods only differ when they adapt a model that already knows something, so tiny
models with `base: synthetic` start from a checkpoint pretrained on the family's operators
(+, -, max, min by default) and are fine-tuned on a held-out operator. The checkpoint is built
once and cached under `cache_dir`, keyed by a hash of everything that determines it. This module
is the cache: the builder is handed in by the run that needs the base (bench/run/recipe.py passes
`Run.build`), so the base is trained by the same run object as every fine-tuning run (full
fine-tuning of the random-init model on the family, on the CPU, with `base_pretraining`'s
optimisation settings) without this module importing the run.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import AutoModelForCausalLM

from bench.config.schema import OptimConfig

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the pretraining code changes what a cached checkpoint holds
OPTIM_KEYS = tuple(f.name for f in dataclasses.fields(OptimConfig))  # what base_pretraining sets of cfg.train


def base_model_key(model_cfg, pretrain_cfg) -> str:
    """Hash of the model shape + tokenizer + pretraining recipe (not of the model's display name)."""
    # Not `path` either: it only names a kept model to evaluate instead (bench/models/loading.py
    # saved_model_dir), which never reaches the base; so existing cache entries keep their keys.
    shape = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k not in ("name", "path")}
    recipe = OmegaConf.to_container(pretrain_cfg, resolve=True)
    blob = json.dumps({"model": shape, "pretrain": recipe, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_build_base(cfg: DictConfig, tokenizer, build_run: Callable[[DictConfig], object]) -> torch.nn.Module:
    """The cached base of `cfg.model` (built first if missing). `tokenizer` is the run's own; the
    pretraining run loads the same one from `cfg.model`. `build_run(config)` builds a run (one with
    `train()` returning its last loss, and `model`): `Run.build`."""
    key = base_model_key(cfg.model, cfg.base_pretraining)
    directory = Path(cfg.cache_dir) / "base-models" / f"{cfg.model.arch}-{key}"
    directory.mkdir(parents=True, exist_ok=True)
    # One builder at a time: parallel jobs of a sweep wait for the first one's checkpoint.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "meta.json").exists():
            _pretrain(cfg, directory, build_run)
    log.info("base model: %s", directory)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)


def pretraining_config(cfg: DictConfig) -> DictConfig:
    """The run config of the base pretraining: the random-init model, the task family, full
    fine-tuning, fp32 on the CPU (tiny: the CPU is the reference and keeps the cache device-independent)."""
    pretrain = cfg.base_pretraining
    pre = cfg.copy()
    with open_dict(pre):
        pre.model.base = None
        pre.task = {"_target_": "bench.tasks.arithmetic.ArithmeticTask", "name": "pretrain",
                    "operators": list(pretrain.operators), "operand_max": pretrain.operand_max, "seed": pretrain.seed,
                    "eval_fraction": 0.2, "n_eval": None,  # a fifth held out for eval, as ever; no validation split
                    "validation_size": 0, "validation_seed": 0}
        pre.method = {"_target_": "methods.full.FullFineTuning"}
        pre.seed, pre.device = pretrain.seed, "cpu"
        pre.eval.split, pre.protocol.stage = "test", None  # no validation split; not a protocol run
        pre.train.merge_with({**{k: pretrain[k] for k in OPTIM_KEYS}, "max_steps": pretrain.steps, "epochs": None,
                              "precision": "fp32", "gradient_checkpointing": False, "max_seq_len": 64,
                              "overlong": "drop", "loss_on_prompt": False, "throughput_warmup_steps": 0,
                              "fast_path": "none", "compile": False, "cuda_graphs": False, "batching": "random",
                              "lr_scaling": "none", "log_every": 1})
    return pre


def _pretrain(cfg: DictConfig, directory: Path, build_run: Callable[[DictConfig], object]) -> None:
    log.info("pretraining the tiny base model on the task family (once; cached in %s)", directory)
    run = build_run(pretraining_config(cfg))
    loss = run.train()
    run.model.save_pretrained(directory)
    # meta.json last: its presence marks a complete checkpoint.
    (directory / "meta.json").write_text(json.dumps(
        {"final_loss": loss, "pretrain": OmegaConf.to_container(cfg.base_pretraining, resolve=True)}, indent=2))
