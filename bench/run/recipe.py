"""A run, built from the resolved config in named steps; it trains, evaluates and owns its state.

After torchtune's recipes (recipes/full_finetune_single_device.py): `Run(cfg)` resolves the
runtime and `Run.setup` is a short sequence of named steps, each building one part of the run's
state. A run records nothing: it knows no run dir and writes no result.json, metrics, checkpoints
or model (it reads its data and models, and fills the caches under cache_dir). Recording is the
ledger's (bench/run/ledger.py), which the entry (bench/cli.py) wraps around a run. Every other
client builds the same object with no ledger: the base pretraining (bench/run/base_model.py), the
benchmark lab (lab/) and the tests' tiny harness (tests/block_harness.py).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import time

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import set_seed

from bench.config.checks import check, cuda_graphs_blockers
from bench.data.batching import RandomBatches, make_batch_stream, tokenize_examples
from bench.data.prompts import prompt_record
from bench.eval.evaluate import evaluate
from bench.loss import compile_chunk_kernel
from bench.compiled import (CompileAhead, DecoderGraph, build_triton_driver, compile_decoder_layers, compile_first_graph,
                            compiles_on_cuda, eager_decoder_layers, start_compile_workers)
from bench.models import saving
from bench.models.loading import (enable_gradient_checkpointing, load_model, load_tokenizer, saved_model_dir,
                                  unique_parameters)
from bench.records.schema import METRIC_KEYS
from bench.records.stats import with_intervals
from bench.run.base_model import load_or_build_base
from bench.run.checkpoint import load_trainable_state, rng_state, set_rng_state, trainable_state
from bench.run.loop import TrainState, train
from bench.run.observers import GIB, PhaseMemory, RssSampler, StepTimer
from bench.run.optim import build_optimizer, build_scheduler, scaled_schedule
from bench.runtime import (CompileRecord, device_share, resolve_device, resolve_precision, synchronize,
                           use_compile_caches)
from methods.base import MethodContext

log = logging.getLogger(__name__)


class Run:
    """One model x task x method run: `Run(cfg)` resolves where and how it runs (the runtime),
    `setup` builds the rest, `train` and `evaluate` do the work. What it finds out about itself on
    the way (the record's run-side keys) is in `facts`; `metrics()` is its outcome."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        # What the run found out about itself while it was built (device share, eval split, weights,
        # steps per epoch, schedule): the record's run-side keys, in the order they are found. A dict,
        # not attributes, so a run that stops half-built still tells the ledger what it knew.
        self.facts: dict = {}
        self.state: TrainState | None = None  # stays None for a method that does not train
        self.final_loss: float | None = None
        self.history: list[dict] = []  # every step's metrics: a resumed run's metrics.jsonl holds them all
        self.peak_rss_bytes = 0  # host RSS, the peak over the run's phases (train, evaluate)
        self.training_released = False  # release_training_memory: the optimizer's moments are gone
        self.setup_runtime()

    @classmethod
    def build(cls, cfg: DictConfig, method=None) -> "Run":
        return cls(cfg).setup(method)

    def setup(self, method=None) -> "Run":
        self.setup_task_and_method(method)
        self.setup_model()
        self.setup_data()
        self.prepare_method()
        self.setup_optimizer()
        return self

    # -- the setup steps, in order --------------------------------------------------------------

    def setup_runtime(self) -> None:
        check(self.cfg)
        self.device = resolve_device(self.cfg.device)
        self.precision = resolve_precision(self.cfg.train.precision, self.device)
        set_seed(self.cfg.seed)
        # A sweep's jobs share one Inductor/Triton cache under cache_dir: only the first compiles.
        self.compiles = CompileRecord(self.cfg.train.compile, use_compile_caches(self.cfg.cache_dir))
        self.facts["device_share"] = device_share(self.device)
        start_compile_workers(self.cfg.train, self.device)  # the kernels the first step compiles

    def setup_task_and_method(self, method=None) -> None:
        self.task = instantiate(self.cfg.task)
        # What the run is scored on, and the held-out split it never trains on (bench/tasks/validation.py).
        self.facts["eval_split"], self.facts["validation"] = self.cfg.eval.split, self.task.validation_record()
        self.method = method if method is not None else instantiate(self.cfg.method)
        # What the first step would compile that needs no model, compiled while the model loads (bench/compiled.py).
        self.compile_ahead = CompileAhead()
        if self.method.trains and compiles_on_cuda(self.cfg.train, self.device):
            self.compile_ahead.submit("triton_driver", build_triton_driver)
            self.compile_ahead.submit("first_graph", functools.partial(compile_first_graph, self.device))

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
        self.facts["weights"] = saving.weights_provenance(model_cfg, self.weights_from)
        self.model = model.to(self.device)
        if self.method.trains and self.device.type == "cuda" \
                and self.cfg.train.fast_path == "chunked_ce":  # the loss's kernel needs only the head's shape
            self.compile_ahead.submit("chunked_ce_kernel", functools.partial(compile_chunk_kernel, self.model,
                                                                             self.precision, self.device))

    def setup_data(self) -> None:
        train_cfg, pad = self.cfg.train, self.tokenizer.pad_token_id
        self.examples = tokenize_examples(self.tokenizer, self.task.train_examples(), train_cfg.max_seq_len,
                                          train_cfg.loss_on_prompt, train_cfg.overlong, self.task.use_chat_template)
        self.batches = make_batch_stream(self.examples, train_cfg, pad, self.cfg.seed)  # train.batching
        self.probe = RandomBatches(self.examples, pad, self.cfg.seed + 1)  # for methods that probe the loss (IST)
        self.steps_per_epoch = max(1, self.batches.batches_per_epoch // train_cfg.grad_accum)
        steps = train_cfg.max_steps if train_cfg.max_steps is not None else train_cfg.epochs * self.steps_per_epoch
        self.total_steps = steps if self.method.trains else 0
        self.facts["steps_per_epoch"] = self.steps_per_epoch  # where a selection trace's epochs begin

    def prepare_method(self) -> None:
        train_cfg = self.cfg.train
        if train_cfg.gradient_checkpointing:
            # Non-reentrant, and no grad forced on the embedding output (transformers 5 forces it).
            enable_gradient_checkpointing(self.model)
        self.ctx = MethodContext(device=self.device, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                                 gradient_checkpointing=train_cfg.gradient_checkpointing, seed=self.cfg.seed,
                                 sample_batch=self.probe, grad_accum=train_cfg.grad_accum, precision=self.precision)
        self.model = self.method.prepare(self.model, self.ctx)
        if train_cfg.compile:  # regional torch.compile: the decoder layers share one graph (bench/compiled.py)
            compile_decoder_layers(self.model)
        self.params = unique_parameters(self.method.trainable_parameters(self.model))

    def setup_optimizer(self) -> None:
        self.timer = StepTimer(self.device, self.cfg.train.throughput_warmup_steps)
        if not self.total_steps:
            return
        # train.lr_scaling: lr and warm-up follow packed's token budget; what the run uses is recorded.
        self.facts["schedule"] = schedule = scaled_schedule(self.cfg.train, self.batches.tokens_ratio)
        optimizer = build_optimizer(self.params, self.cfg.train, self.device, lr=schedule["lr"])
        self.method.attach_optimizer(optimizer)
        scheduler = build_scheduler(optimizer, self.cfg.train, self.total_steps, schedule["warmup_steps"])
        # train.cuda_graphs: captured at the first step (its warm-up and capture count in the run's time)
        graph = DecoderGraph(self.model, self.device) if self.replays_decoder() else None
        self.state = TrainState(self.model, self.method, optimizer, scheduler, self.batches, self.device,
                                self.precision, decoder_graph=graph)

    def replays_decoder(self) -> bool:
        """train.cuda_graphs, resolved: `auto` is on where nothing blocks the replayed decoder, and
        says what blocks it where something does (the record's fast_path.cuda_graphs: what ran)."""
        setting = self.cfg.train.cuda_graphs
        if setting != "auto":
            return bool(setting)
        blockers = cuda_graphs_blockers(self.cfg)
        if self.device.type != "cuda":
            blockers.append(f"needs a CUDA device (this run's is {self.device})")
        if blockers:
            log.info("train.cuda_graphs=auto: the decoder runs without CUDA graphs; it %s", "; ".join(blockers))
        return not blockers

    # -- checkpoint state: everything a bit-identical continuation needs (bench/run/checkpoint.py) --

    def state_dict(self) -> dict:
        self.refuse_if_released("checkpoint")
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

    @property
    def step(self) -> int:
        """Optimizer steps done (0 for a method that does not train)."""
        return self.state.step if self.state is not None else 0

    @contextlib.contextmanager
    def measured_phase(self):
        """One phase's peak GPU memory (the yielded dict, filled when the phase ends) and the host
        RSS it reached (the run's peak is over all its phases)."""
        memory, peaks = PhaseMemory(self.device), {}
        memory.start()
        with RssSampler() as rss:
            yield peaks
        peaks.update(memory.peaks())
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss.peak_bytes)

    def train(self, until: int | None = None, observers=()) -> float | None:
        """Train to `until` (default: the end). The step timer observes first (it adds step_s and
        tokens_per_s), then this run (its history), then the caller's `observers` (the ledger's
        logging and checkpoints, the lab's probes) in order."""
        self.refuse_if_released("train")
        with self.measured_phase() as self.train_peaks:
            if self.state is not None:
                until = self.total_steps if until is None else until
                loss = train(self.state, self.cfg.train, until, [self.timer, self, *observers])
                # resumed from the end-of-training checkpoint: no step ran, the last one logged says
                read = [h["loss"] for h in self.history if h["loss"] is not None]
                self.final_loss = loss if math.isfinite(loss) or not read else read[-1]
        return self.final_loss

    def release_training_memory(self) -> None:
        """Training is over (its last step checkpointed): drop what only training holds on the device, the
        optimizer's moments and the replayed decoder's graphs with their memory pool (its saved activations
        and gradient buffers), so evaluation runs in its own memory (PhaseMemory.start then empties the
        allocator's cache). Why: a graph's private pool stays reserved while the graph lives, so a graphed
        run's evaluation held its training memory as well: SmolLM2-135M on an H100, full FT 20.8 GiB reserved
        in evaluation against 9.7 GiB allocated, LoRA 28.8 against 9.8 (docs/performance-analysis.md); the
        parallel launcher admits a job by that peak, so fewer jobs shared the card. The run cannot train or
        checkpoint afterwards."""
        state = self.state
        if state is None:
            return
        state.optimizer.state.clear()  # the gradients went at the last step (zero_grad, set_to_none)
        if state.decoder_graph is not None:
            state.decoder_graph.release()
        self.training_released = True

    def refuse_if_released(self, what: str) -> None:
        if self.training_released:
            raise RuntimeError(f"cannot {what}: this run's training state was released for evaluation "
                               "(Run.release_training_memory); build a new run to train it again")

    def step_start(self, step: int) -> None:
        # The step timer starts first (Run.train's observers): a wait for the compiles still running counts.
        self.compile_ahead.wait()

    def step_end(self, step: int, metrics: dict) -> None:
        # Every step (its selection, lr, tokens); under train.log_every the loss and grad_norm are
        # null on the steps whose loss was not read, and step_s only on those whose was.
        self.history.append({"step": step, **metrics})

    def evaluate(self) -> dict:
        """Accuracy on the task's eval sets (`eval.split`); the phase's time and peak memory are kept
        for `metrics()`, every scored sample in `samples`."""
        self.compile_ahead.wait()  # a run resumed at its end trains no step
        with self.measured_phase() as self.eval_peaks:
            synchronize(self.device)
            start = time.perf_counter()
            # What generation used, for result.json: the prompt format (bench/data/prompts.py), stop tokens.
            self.eval_protocol: dict = prompt_record(self.task, self.tokenizer)
            with eager_decoder_layers(self.model):  # train.compile: generation runs the plain layers
                self.accuracy_by_task, self.samples = evaluate(self.model, self.tokenizer, self.task, self.cfg.eval,
                                                               self.device, self.precision,
                                                               self.task.use_chat_template, info=self.eval_protocol)
            synchronize(self.device)
            self.eval_seconds = time.perf_counter() - start
        return self.accuracy_by_task

    # -- what the run did: result.json's run-side keys (bench/run/ledger.py writes them) ----------

    def metrics(self) -> dict:
        """result.json's `metrics` (bench/records/schema.py METRIC_KEYS, every key), once trained and evaluated."""
        by_task, primary = self.accuracy_by_task, self.task.primary_metric
        train_peaks, eval_peaks, timer = self.train_peaks, self.eval_peaks, self.timer
        metrics = {
            "accuracy": sum(s[primary] for s in by_task.values()) / len(by_task), "accuracy_ci95": None,
            "accuracy_by_task": by_task, "primary_metric": primary,
            "peak_gpu_memory_gib": train_peaks["allocated_gib"], "peak_gpu_reserved_gib": train_peaks["reserved_gib"],
            "gpu_alloc_retries": train_peaks["alloc_retries"],
            "eval_peak_gpu_memory_gib": eval_peaks["allocated_gib"],
            "eval_peak_gpu_reserved_gib": eval_peaks["reserved_gib"],
            "peak_host_rss_gib": self.peak_rss_bytes / GIB,
            "train_wall_clock_s": timer.total_seconds, "eval_wall_clock_s": self.eval_seconds,
            "train_tokens_per_s": timer.tokens_per_s(), "median_step_s": timer.median_step_s(),
            "train_steps": self.total_steps, "trainable_params": sum(p.numel() for p in self.params),
            "total_params": sum(p.numel() for p in unique_parameters(self.model.parameters())),
            "final_train_loss": self.final_loss,
            "eval_limit": self.cfg.eval.limit, "eval_sample": None if self.cfg.eval.limit is None else self.cfg.eval.sample,
        }
        assert tuple(metrics) == METRIC_KEYS, "bench/records/schema.py METRIC_KEYS and Run.metrics disagree"
        return with_intervals(metrics, self.samples)  # fills accuracy_ci95 and each set's <metric>_ci95

    def performance_record(self) -> dict:
        """What ran fast and what shared the device: result.json's `fast_path`, `compile` and
        `device_share` (the launcher's count of jobs on this device, read again at the end)."""
        graph = self.state.decoder_graph if self.state is not None else None
        return {"fast_path": {"loss": self.cfg.train.fast_path, "compile": bool(self.cfg.train.compile),
                              "cuda_graphs": graph is not None and graph.capture_seconds is not None},
                "compile": {**self.compiles.summary(), "ahead": self.compile_ahead.record()},
                "device_share": device_share(self.device)}
