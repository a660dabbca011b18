"""A run, built from the resolved config in named steps; it trains, evaluates and owns its state.

After torchtune's recipes (recipes/full_finetune_single_device.py): `Run.setup` is a short
sequence of named steps, each building one part of the run's state, and the entry
(bench/cli.py) reads skip-finished -> build -> train -> evaluate -> record. Every other client
builds the same object: the base pretraining (bench/run/base_model.py), the benchmark lab
(lab/) and the tests' tiny harness (tests/block_harness.py).
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import set_seed

from bench.config.checks import check, check_run_dir, check_save_target
from bench.data.batching import RandomBatches, make_batch_stream, tokenize_examples
from bench.data.prompts import prompt_record
from bench.eval.evaluate import evaluate
from bench.compiled import DecoderGraph, compile_decoder_layers, eager_decoder_layers, start_compile_workers
from bench.models import saving
from bench.models.loading import (enable_gradient_checkpointing, load_model, load_tokenizer, saved_model_dir,
                                  unique_parameters)
from bench.records.recorder import RunRecorder, environment, redacted_config, write_json_atomic
from bench.records.schema import METRICS_FILE, METRIC_KEYS, RESULT_FILE, SAMPLES_FILE
from bench.records.stats import with_intervals
from bench.run.base_model import load_or_build_base
from bench.run.checkpoint import (CheckpointDir, load_trainable_state, params_digest, rng_state, set_rng_state,
                                  trainable_state)
from bench.run.loop import TrainState, train
from bench.run.observers import PhaseMemory, RssSampler, StepTimer
from bench.run.optim import build_optimizer, build_scheduler, scaled_schedule
from bench.run.resume import Diverged, Preempted, PreemptionSignals, data_file_hashes, run_key
from bench.run.store import RunStore, this_process
from bench.runtime import (CompileRecord, device_share, resolve_device, resolve_precision, synchronize,
                           use_compile_caches)
from methods.base import MethodContext

log = logging.getLogger("slmbench")
ERROR_STATUSES = {torch.OutOfMemoryError: "oom", Preempted: "preempted"}  # anything else: failed; Ctrl-C: Preempted.status
ERROR_REASONS = {Diverged: "diverged"}  # a failed record's error.reason, where the cause has a name


class Run:
    """One model x task x method run. Without a `run_dir` it records nothing and keeps no
    checkpoints (the base pretraining, the benchmark lab and the tests use it that way)."""

    def __init__(self, cfg: DictConfig, run_dir: Path | str | None = None, names: dict | None = None):
        self.cfg = cfg
        self.config = OmegaConf.to_container(cfg, resolve=True)  # the identity: every value as the run uses it
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # The identity: config and the data files' contents (an edited file is another run).
        self.data_files = data_file_hashes(self.config["task"]) if self.run_dir is not None else {}
        self.key = run_key(self.config, self.data_files)
        self.store = RunStore(cfg.store_dir, self.key)
        self.names = names or {"method": cfg.method.get("_target_"), "model": cfg.model.name, "task": cfg.task.name}
        self.record = {"status": "running", **self.names, "seed": cfg.get("seed"), "run_key": self.key,
                       "run_dir": str(run_dir), "started_at": time.time(),  # with finished_at: overlap of jobs
                       **this_process(), "data_files": self.data_files,  # pid, host: is a `running` record alive?
                       "metrics": {k: None for k in METRIC_KEYS}, "config": redacted_config(cfg), "env": None,
                       "schedule": None}  # the lr and warm-up used (train.lr_scaling), once the optimizer is built
        self.recorder, self.state, self.checkpoints, self.final_loss = None, None, None, None
        self.history: list[dict] = []  # every step's metrics: a resumed run's metrics.jsonl holds them all
        self.signals = PreemptionSignals()  # entered by the entry around every phase (bench/cli.py)
        self.record_written = False  # whether this process wrote result.json in the run dir

    @classmethod
    def build(cls, cfg: DictConfig, run_dir=None, names=None, wandb_group=None, method=None) -> "Run":
        return cls(cfg, run_dir, names).setup(wandb_group, method)

    def setup(self, wandb_group: str | None = None, method=None) -> "Run":
        self.setup_runtime()
        self.setup_store()
        self.setup_task_and_method(method)
        self.setup_model()
        self.setup_data()
        self.prepare_method()
        self.setup_recorder(wandb_group)  # after the steps that refuse bad input: a refusal starts no W&B run
        self.setup_optimizer()
        self.setup_checkpoints()
        return self

    # -- the setup steps, in order --------------------------------------------------------------

    def setup_runtime(self) -> None:
        check(self.cfg)
        self.device = resolve_device(self.cfg.device)
        self.precision = resolve_precision(self.cfg.train.precision, self.device)
        self.record["env"] = environment(self.device)
        set_seed(self.cfg.seed)
        # A sweep's jobs share one Inductor/Triton cache under cache_dir: only the first compiles.
        self.compiles = CompileRecord(self.cfg.train.compile, use_compile_caches(self.cfg.cache_dir))
        self.record["device_share"] = device_share(self.device)
        start_compile_workers(self.cfg.train, self.device)  # the kernels the first step compiles

    def setup_store(self) -> None:
        """Refuse a run dir that holds another run's record; lock the run's store (a second copy of
        this run is refused, naming the holder; an unwritable store_dir is found here, not after
        training); check that `train.save_model` can write its target; then write the `running`
        record, which a killed run leaves behind (reports show it as `died`)."""
        if self.run_dir is not None:
            check_run_dir(self.run_dir, self.key)
            self.store.acquire()
            if self.cfg.train.save_model:
                check_save_target(self.run_dir / "model")
            write_json_atomic(self.run_dir / RESULT_FILE, self.record)
            self.record_written = True

    def setup_recorder(self, wandb_group: str | None) -> None:
        if self.run_dir is not None:
            wandb_cfg = OmegaConf.merge(self.cfg.wandb, {"group": self.cfg.wandb.group or wandb_group})
            self.recorder = RunRecorder(self.run_dir, self.record["config"], wandb_cfg, self.names)  # redacted

    def setup_task_and_method(self, method=None) -> None:
        self.task = instantiate(self.cfg.task)
        # What the run is scored on, and the held-out split it never trains on (bench/tasks/validation.py).
        self.record["eval_split"], self.record["validation"] = self.cfg.eval.split, self.task.validation_record()
        self.method = method if method is not None else instantiate(self.cfg.method)

    def setup_model(self) -> None:
        model_cfg = self.cfg.model
        self.tokenizer = load_tokenizer(model_cfg, cache_dir=self.cfg.cache_dir)  # cache_dir: GGUF conversions
        saved = saved_model_dir(model_cfg)  # model.path=<run dir>/model: a kept model wins over the yaml
        if model_cfg.source == "tiny" and model_cfg.get("base") == "synthetic" and saved is None:
            model = load_or_build_base(self.cfg, self.tokenizer, Run.build)
        else:
            model = load_model(model_cfg, self.tokenizer, seed=self.cfg.seed, cache_dir=self.cfg.cache_dir,
                               device=self.device)
        self.weights_from = str(saved) if saved is not None else saving.weights_origin(model)
        self.record["weights"] = saving.weights_provenance(model_cfg, self.weights_from)
        self.model = model.to(self.device)

    def setup_data(self) -> None:
        train_cfg, pad = self.cfg.train, self.tokenizer.pad_token_id
        self.examples = tokenize_examples(self.tokenizer, self.task.train_examples(), train_cfg.max_seq_len,
                                          train_cfg.loss_on_prompt, train_cfg.overlong, self.task.use_chat_template)
        self.batches = make_batch_stream(self.examples, train_cfg, pad, self.cfg.seed)  # train.batching
        self.probe = RandomBatches(self.examples, pad, self.cfg.seed + 1)  # for methods that probe the loss (IST)
        self.steps_per_epoch = max(1, self.batches.batches_per_epoch // train_cfg.grad_accum)
        steps = train_cfg.max_steps if train_cfg.max_steps is not None else train_cfg.epochs * self.steps_per_epoch
        self.total_steps = steps if self.method.trains else 0
        self.record["steps_per_epoch"] = self.steps_per_epoch  # where a selection trace's epochs begin

    def prepare_method(self) -> None:
        train_cfg = self.cfg.train
        if train_cfg.gradient_checkpointing:
            # Non-reentrant, and no grad forced on the embedding output (transformers 5 forces it).
            enable_gradient_checkpointing(self.model)
        self.ctx = MethodContext(device=self.device, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                                 gradient_checkpointing=train_cfg.gradient_checkpointing, seed=self.cfg.seed,
                                 sample_batch=self.probe, grad_accum=train_cfg.grad_accum, precision=self.precision)
        self.model = self.method.prepare(self.model, self.ctx)
        if train_cfg.compile:  # regional torch.compile: the decoder layers share one graph (bench/loss.py)
            compile_decoder_layers(self.model)
        self.params = unique_parameters(self.method.trainable_parameters(self.model))

    def setup_optimizer(self) -> None:
        self.timer = StepTimer(self.device, self.cfg.train.throughput_warmup_steps)
        if not self.total_steps:
            return
        # train.lr_scaling: lr and warm-up follow packed's token budget; what the run uses is recorded.
        self.record["schedule"] = schedule = scaled_schedule(self.cfg.train, self.batches.tokens_ratio)
        optimizer = build_optimizer(self.params, self.cfg.train, self.device, lr=schedule["lr"])
        self.method.attach_optimizer(optimizer)
        scheduler = build_scheduler(optimizer, self.cfg.train, self.total_steps, schedule["warmup_steps"])
        # train.cuda_graphs: captured at the first step (its warm-up and capture count in the run's time)
        graph = DecoderGraph(self.model, self.device) if self.cfg.train.cuda_graphs else None
        self.state = TrainState(self.model, self.method, optimizer, scheduler, self.batches, self.device,
                                self.precision, decoder_graph=graph)

    def setup_checkpoints(self) -> None:
        if self.run_dir is None:
            return
        self.checkpoints = CheckpointDir(self.store.checkpoints, self.cfg.train.keep_checkpoints)
        resume = self.state is not None and self.cfg.train.resume and not self.cfg.sweep.rerun
        saved = self.checkpoints.load_latest() if resume else None
        if saved is not None:
            self.load_state_dict(saved)
            for logged in self.history:
                self.recorder.log_step(logged["step"], {k: v for k, v in logged.items() if k != "step"})
            self.record["resumed_from_step"] = saved["step"]

    # -- checkpoint state: everything a bit-identical continuation needs (bench/run/checkpoint.py) --

    def state_dict(self) -> dict:
        state = self.state
        return {"step": state.step, "weights": trainable_state(state.model, self.params),
                "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                "method": state.method.state_dict(), "batches": self.batches.state_dict(),
                "probe": self.probe.state_dict(), "rng": rng_state(), "history": self.history,
                "timer": self.timer.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        state = self.state
        load_trainable_state(state.model, saved["weights"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        state.method.load_state_dict(saved["method"])
        self.batches.load_state_dict(saved["batches"])
        self.probe.load_state_dict(saved["probe"])
        set_rng_state(saved["rng"])
        self.timer.load_state_dict(saved["timer"])
        self.history = list(saved["history"])
        state.step = saved["step"]

    # -- train, evaluate -------------------------------------------------------------------------

    @contextlib.contextmanager
    def measured(self):
        """Preemption signals stop the run (a checkpoint at the end of a training step); host RSS is sampled."""
        with self.signals, RssSampler() as self.rss:
            yield self

    def train(self, until: int | None = None, observers=()) -> float | None:
        """Train to `until` (default: the end). The step timer observes first (it adds step_s and
        tokens_per_s), then this run (log, checkpoint), then the caller's `observers`."""
        memory = PhaseMemory(self.device)
        memory.start()
        if self.state is not None:
            until = self.total_steps if until is None else until
            self.signals.phase, self.signals.deferred = "train", True  # a signal waits for the step's end
            try:
                loss = train(self.state, self.cfg.train, until, [self.timer, self, *observers])
            finally:
                self.signals.deferred = False
            if self.signals.received is not None:  # came after the last step's end: its checkpoint is saved
                raise Preempted(self.signals.received, self.state.step)
            # resumed from the end-of-training checkpoint: no step ran, the last one logged says
            read = [h["loss"] for h in self.history if h["loss"] is not None]
            self.final_loss = loss if math.isfinite(loss) or not read else read[-1]
        self.train_peaks = memory.peaks()
        return self.final_loss

    def step_start(self, step: int) -> None:
        pass

    def step_end(self, step: int, metrics: dict) -> None:
        # Every step (its selection, lr, tokens); under train.log_every the loss and grad_norm are
        # null on the steps whose loss was not read, and step_s only on those whose was.
        self.history.append({"step": step, **metrics})
        if self.recorder is not None:
            self.recorder.log_step(step, metrics)
        checked = {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]}  # None: not read this step
        if any(v is not None and not math.isfinite(v) for v in checked.values()):
            raise Diverged(step, checked)  # no checkpoint of a diverged state
        # A checkpoint at the end of training too: a signal during evaluation loses no training,
        # and the relaunch goes straight to evaluation.
        every, received = self.cfg.train.checkpoint_every, self.signals.received
        due = step == self.total_steps or (every and step % every == 0)
        if self.checkpoints is not None and (received or due):
            self.checkpoints.save(step, self.state_dict())
        if received:
            raise Preempted(received, step)

    def keep_model(self) -> dict | None:
        """`train.save_model`: the trained model to <run dir>/model/ (bench/models/saving.py), before
        evaluation, so the model kept is the model evaluated; its path, size and kind go to the record."""
        if self.run_dir is None or not self.cfg.train.save_model:
            return None
        self.signals.phase = "saving the model"
        self.record["saved_model"] = saving.save_model(self.model, self.tokenizer, self.run_dir / "model",
                                                       self.weights_from)
        log.info("model kept in %s (%s); evaluate it again with model.path=%s", self.record["saved_model"]["path"],
                 self.record["saved_model"]["kind"], self.record["saved_model"]["path"])
        return self.record["saved_model"]

    def evaluate(self) -> dict:
        self.signals.phase = "evaluation"
        memory = PhaseMemory(self.device)
        memory.start()
        synchronize(self.device)
        start = time.perf_counter()
        # What generation used, for result.json: the prompt format (bench/data/prompts.py), stop tokens.
        self.eval_protocol: dict = prompt_record(self.task, self.tokenizer)
        with eager_decoder_layers(self.model):  # train.compile: generation runs the plain layers
            self.accuracy_by_task, self.samples = evaluate(self.model, self.tokenizer, self.task, self.cfg.eval,
                                                           self.device, self.precision, self.task.use_chat_template,
                                                           info=self.eval_protocol)
        synchronize(self.device)
        self.eval_seconds, self.eval_peaks = time.perf_counter() - start, memory.peaks()
        return self.accuracy_by_task

    # -- records ---------------------------------------------------------------------------------

    def metrics(self) -> dict:
        """result.json's `metrics` (bench/records/schema.py METRIC_KEYS, every key)."""
        by_task, primary = self.accuracy_by_task, self.task.primary_metric
        train_peaks, eval_peaks, timer = self.train_peaks, self.eval_peaks, self.timer
        metrics = {
            "accuracy": sum(s[primary] for s in by_task.values()) / len(by_task), "accuracy_ci95": None,
            "accuracy_by_task": by_task, "primary_metric": primary,
            "peak_gpu_memory_gib": train_peaks["allocated_gib"], "peak_gpu_reserved_gib": train_peaks["reserved_gib"],
            "gpu_alloc_retries": train_peaks["alloc_retries"],
            "eval_peak_gpu_memory_gib": eval_peaks["allocated_gib"],
            "eval_peak_gpu_reserved_gib": eval_peaks["reserved_gib"],
            "peak_host_rss_gib": self.rss.peak_gib if hasattr(self, "rss") else None,
            "train_wall_clock_s": timer.total_seconds, "eval_wall_clock_s": self.eval_seconds,
            "train_tokens_per_s": timer.tokens_per_s(), "median_step_s": timer.median_step_s(),
            "train_steps": self.total_steps, "trainable_params": sum(p.numel() for p in self.params),
            "total_params": sum(p.numel() for p in unique_parameters(self.model.parameters())),
            "final_train_loss": self.final_loss,
            "eval_limit": self.cfg.eval.limit, "eval_sample": None if self.cfg.eval.limit is None else self.cfg.eval.sample,
        }
        assert tuple(metrics) == METRIC_KEYS, "bench/records/schema.py METRIC_KEYS and Run.metrics disagree"
        return with_intervals(metrics, self.samples)  # fills accuracy_ci95 and each set's <metric>_ci95

    def finished(self) -> dict | None:
        """The finished record of this run's identity, unless `sweep.rerun` asks to run it again."""
        return None if self.cfg.sweep.rerun else self.store.finished_record()

    def reuse(self, done: dict) -> dict:
        """The run dir gets the finished run's result.json, metrics.jsonl and samples.jsonl."""
        check_run_dir(self.run_dir, self.key)
        log.info("already finished in %s: skipped (sweep.rerun=true runs it again)", done["run_dir"])
        return self.store.reuse_into(self.run_dir)

    def performance_record(self) -> dict:
        """What ran fast and what shared the device: result.json's `fast_path`, `compile` and
        `device_share` (the launcher's count of jobs on this device, read again at the end)."""
        graph = self.state.decoder_graph if self.state is not None else None
        return {"fast_path": {"loss": self.cfg.train.fast_path, "compile": bool(self.cfg.train.compile),
                              "cuda_graphs": graph is not None and graph.graphed is not None},
                "compile": self.compiles.summary(), "device_share": device_share(self.device)}

    def finish(self) -> dict:
        """Record an `ok` run: samples, result.json (run dir and store), W&B summary."""
        self.signals.phase = "recording"
        record = self.record
        record.update(self.performance_record())
        record["metrics"], record["eval_protocol"] = self.metrics(), self.eval_protocol
        record["final_params_sha256"] = params_digest(self.model, self.params)
        record["status"], record["finished_at"] = "ok", time.time()
        self.recorder.write_samples(self.samples, primary_metric=self.task.primary_metric)
        self.recorder.write_result(record)
        self.recorder.log_artifact(f"record-{self.key}", "run-record",
                                   [self.run_dir / f for f in (RESULT_FILE, METRICS_FILE, SAMPLES_FILE)])
        self.recorder.close()
        self.store.save_finished(record, self.run_dir)  # what skip-finished serves; checkpoints go
        self.store.release()
        return record

    def refuse(self, err: BaseException) -> None:
        """Bad input found before training: no record counts it as a run. The `running` record this
        process wrote (if it got that far) is taken back, the W&B run finished, the lock released."""
        self.signals.deferred = True
        if self.recorder is not None:
            self.recorder.close(failed=True)
        if self.record_written:
            (self.run_dir / RESULT_FILE).unlink(missing_ok=True)
        self.store.release()

    def fail(self, err: BaseException) -> dict:
        """Record a run that raised (failed | oom | preempted | interrupted); a stop signal is then handed on.
        A record that cannot be written (a full disk) is logged once, naming the file and why; the
        caller then re-raises the run's own error, so one traceback shows what went wrong."""
        self.signals.deferred = True  # a signal now waits until the record is written
        record = self.record
        record["status"] = next((s for t, s in ERROR_STATUSES.items() if isinstance(err, t)), "failed")
        record["status"] = err.status if isinstance(err, Preempted) else record["status"]
        step = self.state.step if self.state is not None else 0
        step = err.step if isinstance(err, Diverged) else step
        reason = next((r for t, r in ERROR_REASONS.items() if isinstance(err, t)), None)
        record["error"] = {"type": type(err).__name__, "message": str(err), "step": step,
                           **({"reason": reason} if reason else {})}
        if hasattr(self, "compiles"):
            record.update(self.performance_record())
        record["finished_at"] = time.time()
        try:
            if self.recorder is None:
                write_json_atomic(self.run_dir / RESULT_FILE, record)
            else:
                self.recorder.record_failure(record)  # never raises from W&B: the signal below is handed on
        except OSError as write_err:
            log.error("the %s record could not be written to %s: %s (the run itself stopped with %s: %s)",
                      record["status"], self.run_dir / RESULT_FILE, write_err, type(err).__name__, err)
        self.store.release()
        signum = err.signum if isinstance(err, Preempted) else self.signals.received
        if signum is not None:
            self.signals.redeliver(signum)
        return record
