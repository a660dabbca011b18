"""`slmbench`: build -> train -> evaluate -> record one run (a Hydra app; `-m` sweeps)."""
from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed
from transformers.utils import logging as hf_logging

import bench.config.schema  # noqa: F401 - registers the structured-config schema before Hydra composes
from bench.run.base_model import load_or_build_base
from bench.run.checkpoint import CheckpointDir, load_trainable_state, rng_state, set_rng_state, trainable_state
from bench.config.checks import ConfigError, check
from bench.runtime import resolve_device, resolve_precision, synchronize
from bench.data.batching import BatchStream, RandomBatches, tokenize_examples
from bench.eval.evaluate import evaluate
from bench.loss import compile_decoder_layers
from bench.run.observers import PhaseMemory, RssSampler, StepTimer
from bench.models.loading import enable_gradient_checkpointing, load_model, load_tokenizer, unique_parameters
from bench.run.optim import build_optimizer, build_scheduler
from bench.records.recorder import METRIC_KEYS, RESULT_FILE, RunRecorder, environment, write_json_atomic
from bench.run.resume import Preempted, PreemptionSignals, finished_record, run_key
from bench.run.loop import TrainState, train
from methods.base import MethodContext

log = logging.getLogger("slmbench")


def build_model(cfg: DictConfig, tokenizer) -> torch.nn.Module:
    if cfg.model.source == "tiny" and cfg.model.get("base") == "synthetic":
        return load_or_build_base(cfg.model, cfg.base_pretraining, tokenizer, Path(cfg.cache_dir))
    return load_model(cfg.model, tokenizer, seed=cfg.seed, cache_dir=cfg.cache_dir)


def params_digest(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> str:
    """sha256 of the trainable weights: equal digests = bit-identical runs (resume tests)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(model, params).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


def snapshot(state: TrainState, params, timer: StepTimer, probe: RandomBatches, history: list) -> dict:
    """Everything a bit-identical continuation needs (see bench/run/checkpoint.py)."""
    return {"step": state.step, "weights": trainable_state(state.model, params),
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "method": state.method.state_dict(), "batches": state.batches.state_dict(),
            "probe": probe.state_dict(), "rng": rng_state(), "history": history,
            "timer": {"seconds": timer.step_seconds, "tokens": timer.step_tokens}}


def restore(state: TrainState, saved: dict, timer: StepTimer, probe: RandomBatches) -> None:
    load_trainable_state(state.model, saved["weights"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.method.load_state_dict(saved["method"])
    state.batches.load_state_dict(saved["batches"])
    probe.load_state_dict(saved["probe"])
    set_rng_state(saved["rng"])
    timer.step_seconds, timer.step_tokens = saved["timer"]["seconds"], saved["timer"]["tokens"]
    state.step = saved["step"]


def run_job(cfg: DictConfig, run_dir: Path, names: dict[str, str], wandb_group: str | None) -> dict:
    """One run. Writes result.json whatever happens (ok | failed | oom | preempted) and returns it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    key = run_key(config)
    store = Path(cfg.store_dir) / key
    if not cfg.sweep.rerun and (done := finished_record(store)) is not None:
        log.info("already finished in %s: skipped (sweep.rerun=true runs it again)", done["run_dir"])
        reused = {**done, "reused_from": done["run_dir"]}
        write_json_atomic(Path(run_dir) / RESULT_FILE, reused)
        return reused
    record = {"status": "running", **names, "seed": cfg.get("seed"), "run_key": key, "run_dir": str(run_dir),
              "started_at": time.time(),  # with finished_at: when parallel jobs overlapped
              "metrics": {k: None for k in METRIC_KEYS}, "config": config, "env": None}
    progress, history, recorder, signals = {"step": 0}, [], None, PreemptionSignals()
    try:
        check(cfg)
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.train.precision, device)
        record["env"] = environment(device)
        set_seed(cfg.seed)
        wandb_cfg = OmegaConf.merge(cfg.wandb, {"group": cfg.wandb.group or wandb_group})
        recorder = RunRecorder(run_dir, config, wandb_cfg, names)
        tokenizer = load_tokenizer(cfg.model, cache_dir=cfg.cache_dir)  # cache_dir: GGUF conversions
        task = instantiate(cfg.task)
        method = instantiate(cfg.method)
        model = build_model(cfg, tokenizer).to(device)
        examples = tokenize_examples(tokenizer, task.train_examples(), cfg.train.max_seq_len,
                                     cfg.train.loss_on_prompt, cfg.train.overlong, task.use_chat_template)
        batches = BatchStream(examples, cfg.train.batch_size, tokenizer.pad_token_id, cfg.seed)
        probe = RandomBatches(examples, tokenizer.pad_token_id, cfg.seed + 1)
        steps_per_epoch = max(1, batches.batches_per_epoch // cfg.train.grad_accum)
        total_steps = cfg.train.max_steps if cfg.train.max_steps is not None else cfg.train.epochs * steps_per_epoch
        total_steps = total_steps if method.trains else 0
        if cfg.train.gradient_checkpointing:
            # Non-reentrant, and no grad forced on the embedding output (transformers 5 forces it).
            enable_gradient_checkpointing(model)
        ctx = MethodContext(device=device, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                            gradient_checkpointing=cfg.train.gradient_checkpointing, seed=cfg.seed,
                            sample_batch=probe, grad_accum=cfg.train.grad_accum,
                            precision=precision)  # for methods' own forward passes (IST's probes)
        model = method.prepare(model, ctx)
        if cfg.train.get("compile"):  # issue 8: regional torch.compile of the decoder layers
            compile_decoder_layers(model)
        params = unique_parameters(method.trainable_parameters(model))
        timer = StepTimer(device, cfg.train.throughput_warmup_steps)
        checkpoints = CheckpointDir(store / "checkpoints", cfg.train.keep_checkpoints)
        state = None
        if total_steps:
            optimizer = build_optimizer(params, cfg.train, device)
            method.attach_optimizer(optimizer)
            state = TrainState(model, method, optimizer, build_scheduler(optimizer, cfg.train, total_steps), batches)
            saved = checkpoints.load_latest() if cfg.train.resume and not cfg.sweep.rerun else None
            if saved is not None:
                restore(state, saved, timer, probe)
                history = saved["history"]
                for logged in history:  # the resumed run's metrics.jsonl holds every step
                    recorder.log_step(logged["step"], {k: v for k, v in logged.items() if k != "step"})
                record["resumed_from_step"] = saved["step"]

        def on_step(step: int, metrics: dict) -> None:
            progress["step"] = step
            history.append({"step": step, **metrics})
            recorder.log_step(step, metrics)
            every = cfg.train.checkpoint_every
            if signals.received or (every and step % every == 0 and step < total_steps):
                checkpoints.save(step, snapshot(state, params, timer, probe, history))
            if signals.received:
                raise Preempted(signals.received, step)

        train_memory, eval_memory = PhaseMemory(device), PhaseMemory(device)
        with signals, RssSampler() as rss:
            train_memory.start()
            final_loss = train(state, cfg.train, device, precision, total_steps, timer, on_step) if state else None
            train_peaks = train_memory.peaks()
            eval_memory.start()
            synchronize(device)
            eval_start = time.perf_counter()
            accuracy_by_task, samples = evaluate(model, tokenizer, task, cfg.eval, device, precision,
                                                 task.use_chat_template)
            synchronize(device)
            eval_seconds = time.perf_counter() - eval_start
            eval_peaks = eval_memory.peaks()
        primary = task.primary_metric
        record["metrics"] = {
            # The primary accuracy: the task's primary metric, averaged over its eval sets.
            "accuracy": sum(s[primary] for s in accuracy_by_task.values()) / len(accuracy_by_task),
            "accuracy_by_task": accuracy_by_task,
            "primary_metric": primary,
            "peak_gpu_memory_gib": train_peaks["allocated_gib"],
            "peak_gpu_reserved_gib": train_peaks["reserved_gib"],
            "gpu_alloc_retries": train_peaks["alloc_retries"],
            "eval_peak_gpu_memory_gib": eval_peaks["allocated_gib"],
            "eval_peak_gpu_reserved_gib": eval_peaks["reserved_gib"],
            "peak_host_rss_gib": rss.peak_gib,
            "train_wall_clock_s": timer.total_seconds,
            "eval_wall_clock_s": eval_seconds,
            "train_tokens_per_s": timer.tokens_per_s(),
            "median_step_s": timer.median_step_s(),
            "train_steps": total_steps,
            "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in unique_parameters(model.parameters())),
            "final_train_loss": final_loss,
            # Which eval examples were scored: all (null), the first N, or a seeded sample of N.
            "eval_limit": cfg.eval.limit,
            "eval_sample": None if cfg.eval.limit is None else cfg.eval.sample,
        }
        record["final_params_sha256"] = params_digest(model, params)
        record["status"], record["finished_at"] = "ok", time.time()
        recorder.write_samples(samples)
        recorder.write_result(record)
        recorder.close()
        write_json_atomic(store / RESULT_FILE, record)  # what skip-finished looks up
        shutil.rmtree(store / "checkpoints", ignore_errors=True)  # finished: the record is what counts
        return record
    except BaseException as err:
        statuses = {torch.OutOfMemoryError: "oom", Preempted: "preempted"}
        record["status"] = next((s for t, s in statuses.items() if isinstance(err, t)), "failed")
        record["error"] = {"type": type(err).__name__, "message": str(err), "step": progress["step"]}
        record["finished_at"] = time.time()
        if recorder is None:
            write_json_atomic(Path(run_dir) / RESULT_FILE, record)
        else:
            recorder.write_result(record)
            recorder.close(failed=True)
        if isinstance(err, Preempted):
            signals.redeliver(err.signum)
        raise
