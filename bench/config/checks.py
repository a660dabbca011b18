"""Checks on the composed config that Hydra cannot express: they name the key and the rule.

They run at start, before any model is built: a bad value costs seconds, not a training run.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import tempfile
from pathlib import Path

from hydra.utils import get_class

from bench.config import schema
from bench.errors import ConfigError
from bench.records.schema import RESULT_FILE

# This module imports no torch at load time: the allowed values live in the modules that own them
# (the loss, the engines, the optimizer...), which import torch, so they are imported inside the
# checks that read them. `bench.cli` refuses a misspelt key with check_known_keys before any of them
# loads (tests/test_fast_start.py).

__all__ = ["ConfigError", "check", "check_known_keys", "check_numbers"]

# The closed sections: their keys are exactly the schema's fields. Hydra refuses a misspelt
# `train.lrr=1`, but `+train.lrr=1` (the fix its own error message suggests) adds the key anyway.
CLOSED_SECTIONS = {"train": schema.TrainConfig, "eval": schema.EvalConfig, "wandb": schema.WandbConfig,
                   "sweep": schema.SweepConfig, "base_pretraining": schema.BasePretrainingConfig}


# The model section's keys: what the model loaders read (bench/models/loading.py, gguf.py) and the
# model yamls set (tests/test_config_sections.py checks every conf/model yaml against it).
MODEL_KEYS = ("name", "source", "path", "arch", "tokenizer", "base", "dims", "init", "dtype", "hub_id",
              "gguf_package", "gguf_file", "special_tokens", "specials_mismatch", "trust_remote_code")


def allowed_values(cfg) -> dict[str, tuple[object, tuple]]:
    """Each key with a closed set of values: (its value, the allowed values from the module that owns it)."""
    from bench.data.batching import BATCHINGS, OVERLONG
    from bench.eval.evaluate import ENGINES, SAMPLES
    from bench.compiled import CUDA_GRAPH_SETTINGS
    from bench.loss import FAST_PATHS
    from bench.models.loading import SPECIALS_MISMATCH
    from bench.records.recorder import WANDB_MODES
    from bench.config.schema import LR_SCALINGS, SCHEDULES
    from bench.protocol import STAGES
    from bench.runtime import PRECISIONS, TIMINGS
    from bench.tasks.base import EVAL_SPLITS

    t, e = cfg.train, cfg.eval
    return {"train.precision": (t.precision, PRECISIONS), "train.fast_path": (t.fast_path, FAST_PATHS),
            "train.schedule": (t.schedule, SCHEDULES), "train.overlong": (t.overlong, OVERLONG),
            "train.batching": (t.batching, BATCHINGS), "train.cuda_graphs": (t.cuda_graphs, CUDA_GRAPH_SETTINGS),
            "train.lr_scaling": (t.lr_scaling, tuple(LR_SCALINGS)), "eval.engine": (e.engine, ENGINES),
            "eval.sample": (e.sample, SAMPLES), "wandb.mode": (cfg.wandb.mode, WANDB_MODES),
            "eval.split": (e.split, EVAL_SPLITS), "protocol.stage": (cfg.protocol.stage, (None, *STAGES)),
            "timing": (cfg.get("timing"), TIMINGS),
            "model.specials_mismatch": (cfg.model.get("specials_mismatch") if cfg.model is not None else None,
                                        SPECIALS_MISMATCH)}


def check(cfg) -> None:
    check_known_keys(cfg)
    check_open_sections(cfg)
    check_values(cfg)
    check_training_happens(cfg)


def check_known_keys(cfg) -> None:
    for section, schema_type in CLOSED_SECTIONS.items():
        known = [f.name for f in dataclasses.fields(schema_type)]
        for key in cfg[section]:
            if key not in known:
                raise _unknown(section, key, known)


def _unknown(section: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {section}.{close[0]}?" if close else f"known keys: {', '.join(known)}"
    return ConfigError(f"{section}.{key} is not a known key; {hint}")


def check_open_sections(cfg) -> None:
    """`+model.x=1`, `+method.x=1`, `+task.x=1`: the model section's keys are MODEL_KEYS; a method's
    or task's are the knobs of the class its `_target_` names (its constructor's parameters)."""
    if cfg.get("model") is not None:
        for key in cfg.model:
            if key not in MODEL_KEYS:
                raise _unknown("model", key, list(MODEL_KEYS))
    for section in ("method", "task"):
        if cfg.get(section) is not None:
            check_target_knobs(cfg[section], section)


def check_target_knobs(node, section: str) -> None:
    """The keys of a `_target_` node (and of nested ones, IST's `lora`) against its class's knobs."""
    target = node.get("_target_")
    if target is None:
        return
    init = get_class(target).__init__
    params = {} if init is object.__init__ else inspect.signature(init).parameters  # no knobs at all
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [name for name in params if name != "self"]
    for key in node:
        if str(key).startswith("_"):
            continue
        if key not in known:
            raise _unknown(section, key, known)
        if hasattr(node[key], "get") and hasattr(node[key], "keys") and node[key].get("_target_") is not None:
            check_target_knobs(node[key], f"{section}.{key}")


def check_run_dir(run_dir: Path, key: str) -> None:
    """One run per run dir: a dir that holds another identity's record is refused, so two runs
    never overwrite each other's result.json or interleave their metrics.jsonl. The same identity
    (a relaunch into its own dir) goes on; the store lock refuses a live twin."""
    run_dir = Path(run_dir).resolve()
    if run_dir == Path(run_dir.anchor):
        raise ConfigError(f"hydra.run.dir={run_dir}: a filesystem root is not a run dir; give a directory of its own")
    record_path = run_dir / RESULT_FILE
    if not record_path.exists():
        return
    try:
        record = json.loads(record_path.read_text())
        other = record.get("run_key"), record.get("status")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"hydra.run.dir={run_dir} holds an unreadable {RESULT_FILE} ({err}); one run per run "
                          "dir: give hydra.run.dir a new directory") from None
    if other[0] != key:
        raise ConfigError(f"hydra.run.dir={run_dir} holds another run's record (run key {other[0]}, status "
                          f"{other[1]}); one run per run dir: give hydra.run.dir a new directory")


def check_save_target(target: Path) -> None:
    """`train.save_model=true`: its target is writable, found at start rather than after training."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-check."):
            pass
    except OSError as err:
        raise ConfigError(f"train.save_model=true but {target} is not writable ({err.strerror or err}); "
                          "give hydra.run.dir a writable directory or set train.save_model=false") from None


def check_training_happens(cfg) -> None:
    """A training method with zero steps would record `ok` for a model that trained nothing."""
    t = cfg.train
    if t.max_steps != 0 and t.epochs != 0:
        return
    method = _method_class(cfg)
    if method is None or method.trains:
        key = "train.max_steps" if t.max_steps == 0 else "train.epochs"
        raise ConfigError(f"{key}=0 trains nothing; give a positive value "
                          f"(method=none evaluates the starting model)")


def check_values(cfg) -> None:
    check_numbers(cfg)
    for key, (value, allowed) in allowed_values(cfg).items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; allowed: {', '.join(map(str, allowed))}")
    _check_packing(cfg.train)
    _check_cuda_graphs(cfg)
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
    check_task_prompt(cfg.task)
    check_validation_split(cfg)


def check_numbers(cfg) -> None:
    """The numbers' ranges: pure arithmetic on the config, so `bench.cli` runs them before torch loads
    (with check_known_keys) and a zero batch size or eval limit is refused in about a second."""
    t, e = cfg.train, cfg.eval
    positive = {"train.batch_size": t.batch_size, "train.lr": t.lr, "train.grad_accum": t.grad_accum,
                "eval.batch_size": e.batch_size, "eval.max_new_tokens": e.max_new_tokens,
                "eval.check_every": e.check_every,
                "train.max_seq_len": t.max_seq_len, "train.log_every": t.log_every}
    for key, value in positive.items():
        if value is None or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{key} must be positive and finite, got {value}")
    if cfg.seed is None or cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
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


def cuda_graphs_blockers(cfg) -> list[str]:
    """What keeps this config's decoder from being replayed as CUDA graphs, each a "needs ..." phrase
    (bench/compiled.py DecoderGraph says why each); empty: nothing (the device is checked at build)."""
    t = cfg.train
    needs = {"train.batching": (t.batching, "packed"), "train.fast_path": (t.fast_path, "chunked_ce"),
             "train.grad_accum": (t.grad_accum, 1), "train.gradient_checkpointing": (t.gradient_checkpointing, False)}
    blockers = [f"needs {key}={required} (got {value})" for key, (value, required) in needs.items() if value != required]
    method = _method_class(cfg)
    if method is not None and method.trains and not method.cuda_graph_safe:
        # Our choice: no re-capture per trainable set (LISA/BAdam switch every N steps; a capture
        # costs about a compiled step, and the selection methods' hooks would run only while capturing).
        blockers.append(f"needs a method that keeps its trainable set and adds no hooks (Method.cuda_graph_safe: "
                        f"full, lora); {cfg.method._target_} does not (its set changes between steps, and "
                        f"re-capturing per set is not implemented)")
    return blockers


def _check_cuda_graphs(cfg) -> None:
    """train.cuda_graphs=true: refused where the replayed decoder cannot run (`auto` turns itself off
    there instead, and the run says so: bench/run/recipe.py)."""
    if cfg.train.cuda_graphs is not True:
        return
    blockers = cuda_graphs_blockers(cfg)
    if blockers:
        raise ConfigError(f"train.cuda_graphs=true {blockers[0]}; use train.cuda_graphs=false or auto "
                          f"(see bench/compiled.py DecoderGraph)")


def _method_class(cfg):
    """The class `method._target_` names, or None (no method section, or no target)."""
    target = cfg.method.get("_target_") if cfg.get("method") is not None else None
    return None if target is None else get_class(target)


def _check_packing(t) -> None:
    if t.lr_scaling != "none" and (t.batching != "packed" or t.pack_tokens is None):
        raise ConfigError(f"train.lr_scaling={t.lr_scaling} scales lr by train.pack_tokens over the default token "
                          f"budget: it needs train.batching=packed and train.pack_tokens set (got "
                          f"train.batching={t.batching}, train.pack_tokens={t.pack_tokens})")
    if t.batching != "packed":
        return
    if t.pack_len < t.max_seq_len:
        raise ConfigError(f"train.pack_len={t.pack_len} must be at least train.max_seq_len={t.max_seq_len} "
                          f"(every sequence fits one packed row)")
    if t.pack_tokens is not None and t.pack_tokens <= 0:
        raise ConfigError(f"train.pack_tokens must be positive or null, got {t.pack_tokens}")


def check_validation_split(cfg) -> None:
    """eval.split=validation scores the examples task.validation_size holds out (bench/tasks/validation.py)."""
    size = cfg.task.get("validation_size") if cfg.task is not None else None
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ConfigError(f"task.validation_size must be an integer >= 0 (0: no validation split), got {size!r}")
    if cfg.eval.split == "validation" and not size:
        raise ConfigError(f"eval.split=validation needs task.validation_size > 0 (got {size}): the examples held "
                          f"out of the training file (conf/task/{cfg.task.get('name') if cfg.task else None}.yaml)")
    if cfg.protocol.stage == "selection" and cfg.eval.split != "validation":
        raise ConfigError(f"protocol.stage=selection chooses the lr on validation: it needs eval.split=validation "
                          f"(got {cfg.eval.split}; bench/protocol.py)")


def check_task_prompt(task) -> None:
    """The prompt keys of tasks that have them (bench/data/prompts.py, bench/tasks/fewshot.py)."""
    from bench.data.prompts import PROMPT_FORMATS

    if task is None:
        return
    if task.get("prompt_format") is not None and task.prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"task.prompt_format={task.prompt_format!r}; allowed: {', '.join(PROMPT_FORMATS)}")
    if task.get("num_fewshot") is not None and task.num_fewshot < 0:
        raise ConfigError(f"task.num_fewshot must be >= 0, got {task.num_fewshot}")
