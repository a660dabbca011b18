"""Checks on the composed config that Hydra cannot express: they name the key and the rule.

They run at start, before any model is built: a bad value costs seconds, not a training run.
"""
from __future__ import annotations

import difflib
import dataclasses

from hydra.utils import get_class

from bench.config import schema
from bench.data.batching import BATCHINGS

# The closed sections: their keys are exactly the schema's fields. Hydra refuses a misspelt
# `train.lrr=1`, but `+train.lrr=1` (the fix its own error message suggests) adds the key anyway.
CLOSED_SECTIONS = {"train": schema.TrainConfig, "eval": schema.EvalConfig, "wandb": schema.WandbConfig,
                   "sweep": schema.SweepConfig, "base_pretraining": schema.BasePretrainingConfig}


class ConfigError(ValueError):
    """A bad value in the run's config; reported as one line, without a traceback."""


def check(cfg) -> None:
    check_known_keys(cfg)
    check_values(cfg)
    check_training_happens(cfg)


def check_known_keys(cfg) -> None:
    for section, schema_type in CLOSED_SECTIONS.items():
        known = [f.name for f in dataclasses.fields(schema_type)]
        for key in cfg[section]:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {section}.{close[0]}?" if close else f"known keys: {', '.join(known)}"
                raise ConfigError(f"{section}.{key} is not a known key; {hint}")


def check_training_happens(cfg) -> None:
    """A training method with zero steps would record `ok` for a model that trained nothing."""
    t = cfg.train
    if t.max_steps != 0 and t.epochs != 0:
        return
    method = cfg.method.get("_target_") if cfg.get("method") is not None else None
    if method is None or get_class(method).trains:
        key = "train.max_steps" if t.max_steps == 0 else "train.epochs"
        raise ConfigError(f"{key}=0 trains nothing; give a positive value "
                          f"(method=none evaluates the starting model)")


def check_values(cfg) -> None:
    t, e = cfg.train, cfg.eval
    positive = {"train.batch_size": t.batch_size, "train.lr": t.lr, "train.grad_accum": t.grad_accum,
                "eval.batch_size": e.batch_size, "eval.max_new_tokens": e.max_new_tokens,
                "train.max_seq_len": t.max_seq_len}
    for key, value in positive.items():
        if value is None or value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if (t.max_steps is None) == (t.epochs is None):
        raise ConfigError(f"set exactly one of train.max_steps and train.epochs "
                          f"(got max_steps={t.max_steps}, epochs={t.epochs})")
    for key in ("max_steps", "epochs", "warmup_steps", "throughput_warmup_steps"):
        if t.get(key) is not None and t[key] < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {t[key]}")
    if e.limit is not None and e.limit <= 0:
        raise ConfigError(f"eval.limit must be positive or null (every example), got {e.limit}")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
    if e.sample not in ("first", "random"):
        raise ConfigError(f"eval.sample={e.sample!r}; allowed: first, random")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision={t.precision!r}; allowed: auto, bf16, fp32")
    if t.get("fast_path", "none") not in ("none", "chunked_ce"):  # issue 8: bench/loss.py FAST_PATHS
        raise ConfigError(f"train.fast_path={t.fast_path!r}; allowed: none, chunked_ce")
    if e.get("engine", "hf") not in ("hf", "static"):  # issue 8: bench/eval/evaluate.py ENGINES
        raise ConfigError(f"eval.engine={e.engine!r}; allowed: hf, static")
    _check_batching(t)
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")


def _check_batching(t) -> None:
    if t.batching not in BATCHINGS:
        raise ConfigError(f"train.batching={t.batching!r}; allowed: {', '.join(BATCHINGS)}")
    if t.batching != "packed":
        return
    if t.pack_len < t.max_seq_len:
        raise ConfigError(f"train.pack_len={t.pack_len} must be at least train.max_seq_len={t.max_seq_len} "
                          f"(every sequence fits one packed row)")
    if t.pack_tokens is not None and t.pack_tokens <= 0:
        raise ConfigError(f"train.pack_tokens must be positive or null, got {t.pack_tokens}")
