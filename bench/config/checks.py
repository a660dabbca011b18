"""Checks on the composed config that Hydra cannot express: they name the key and the rule."""
from __future__ import annotations

from bench.data.prompts import PROMPT_FORMATS
from bench.models.loading import SPECIALS_MISMATCH


class ConfigError(ValueError):
    """A bad value in the run's config; reported as one line, without a traceback."""


def check(cfg) -> None:
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
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
    check_task_prompt(cfg.task)
    mismatch = cfg.model.get("specials_mismatch") if cfg.model is not None else None
    if mismatch not in SPECIALS_MISMATCH:
        raise ConfigError(f"model.specials_mismatch={mismatch!r}; allowed: {', '.join(SPECIALS_MISMATCH)}")


def check_task_prompt(task) -> None:
    """The prompt keys of tasks that have them (bench/data/prompts.py, bench/tasks/fewshot.py)."""
    if task is None:
        return
    if task.get("prompt_format") is not None and task.prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"task.prompt_format={task.prompt_format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
    if task.get("num_fewshot") is not None and task.num_fewshot < 0:
        raise ConfigError(f"task.num_fewshot must be >= 0, got {task.num_fewshot}")
