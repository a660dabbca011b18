"""`python -m lab real_workload`: the reference workload, measured as users run it.

SmolLM2-135M-Instruct (`model=smollm2-135m`, really pretrained) fine-tuned on GSM8K train from
local files for one epoch at batch 16, evaluated on the full GSM8K test set (1,319 prompts), bf16
autocast on a GPU. Every harness figure comes from the run object (bench/run/recipe.py) of a config
composed as `slmbench <overrides>` composes it; each row records those overrides. Parts (`--parts`):

- train: a plain eager loop fed the default run's padded batches (`plain_eager`) and the fast
  path's batches (`plain_same_batches_as_fast`), HF `Trainer` on the run's tokenized examples
  (`hf_trainer`), the default run (`harness_default`) and the fastest settings (`harness_fast`).
  Tokens/s counts real (non-padding) tokens; per-step figures come from the same window of steps.
- eval: HF `generate` against the static engine (with refill) on the same prompts, and how many
  texts are identical in fp32 and in bf16.
- methods: every method for one epoch through the run, then evaluated (accuracy, 95% CI).
- paper_config: `+experiment=adagradselect_paper`'s training settings on the three real shapes
  (random weights), full against topk and AdaGradSelect.
- cold_start: `harness_fast`'s epoch in `--cold-processes` new processes, one after the other, each
  with empty Inductor and Triton caches of its own (no evaluation): how a first run's epoch, compile
  included, spreads on this machine; the train part's row is one such epoch.

Each part writes its key of `--out` as soon as it is measured, into the file an earlier call wrote
(unless `--fresh`): the parts can be split over device calls, and a run cut short keeps what it
measured. `python -m lab report --real-workload FILE` renders it. Figures are measurements,
never asserted.

Example (one H200):
    python -m lab real_workload --data-dir .devdata --parts train eval --out docs/perf/real_workload.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.data.prompts import build_prompt
from bench.eval.evaluate import limit_examples
from bench.records.recorder import environment, worktree_tree_sha, write_json_atomic
from bench.run.recipe import Run
from bench.runtime import resolve_device
from lab.loops import (PlainLoop, PlainTurns, Profiler, StepLog, compile_seconds, compile_seconds_since,
                       profile_figures, profiled, profiler_activities, release, resident_bytes, run_harness,
                       run_harness_window, run_hf_trainer, step_tokens, timed_generation, warm_shapes)
from lab.report import real_workload_summary
from lab.shapes import guarded
from lab.workload import (compose, draw_batches, lab_overrides, padding_fraction, real_tokens, reference_overrides,
                          sweep_methods)

log = logging.getLogger("lab.real_workload")
PARTS = ("train", "eval", "methods", "paper_config", "cold_start")
# Overhead pairs, fed the same batches and computing the same loss (harness overhead per batching):
# plain_eager / harness_default (padded), plain_length_grouped / harness_length_grouped,
# plain_same_batches_as_fast / harness_same_batches_as_fast (the fast path's packed batches, HF's
# loss, eager, as the plain loop runs them). The two sides of a pair take turns in one process,
# every step or every train.log_every steps (lab/loops.py PlainTurns): measured one after the
# other, whichever came first in a fresh process ran faster. harness_fast_eager: the fast settings
# without compile (the chunked loss, eager kernels, the decoder still replayed as CUDA graphs on a
# GPU), what compile adds to the fast path; trained for the whole epoch too. harness_fast comes
# first: its epoch (a target) pays every first-time cost of the process (Inductor, cuBLAS, the
# chunked loss's compiled kernel) as a user's first run does, none paid by an earlier row.
TRAIN_ROWS = ("harness_fast", "plain_eager", "harness_default", "plain_length_grouped", "harness_length_grouped",
              "plain_same_batches_as_fast", "harness_same_batches_as_fast", "hf_trainer", "harness_fast_eager")
LENGTH_GROUPED = ("train.batching=length_grouped",)
METHODS = sweep_methods()  # the default sweep's (conf/config.yaml), in its order
PAPER_SHAPES = ("qwen2.5-0.5b", "llama3.2-1b", "phi4-mini")  # the paper's three models (conf/experiment)
PAPER_METHODS = ("full", "topk", "adagradselect")
# The harness's fastest settings (README "Batching", "Performance"): packed rows of 16,384 real
# tokens per step (about 6.4 default batches of 2,543 real tokens: a step of those is launch-bound
# on an H200, one of 16k is much less so, docs/performance-analysis.md), lr and warm-up scaled by the square-root rule for Adam (train.lr_scaling,
# bench/run/optim.py), the chunked loss (no full-vocabulary logits), compiled decoder layers (one
# graph, static shapes), the loss read every 10 steps. harness_default and harness_fast are both
# evaluated and their loss curves kept: the comparison of optimisation the budget change needs.
PACKED_FAST = ("train.batching=packed", "train.pack_tokens=16384", "train.lr_scaling=sqrt", "train.fast_path=chunked_ce")
# train.cuda_graphs: the decoder's forward and backward replayed as CUDA graphs (bench/compiled.py
# DecoderGraph): a compiled step of 16k tokens was still host-bound on an H200 (47% GPU busy).
FAST_SETTINGS = (*PACKED_FAST, "train.compile=true", "train.cuda_graphs=true", "train.log_every=10")
# Methods: the fast batches and loss, not compile: its compile time (tens of seconds, per run)
# would be paid 8 times; harness_fast measures what compile adds.
METHOD_SETTINGS = PACKED_FAST
GPU_ONLY = {"train.compile=true": "torch.compile left out: GPU only here (Inductor on CPU needs a C++ toolchain and minutes)",
            "train.cuda_graphs=true": "CUDA graphs left out: CUDA only"}
# --quick: a CPU smoke run on a tiny model (tests/test_real_workload.py); its figures mean nothing.
QUICK = {"steps": 1, "warmup": 1, "cold_processes": 1, "batch_size": 2, "eval_limit": 4, "identical_n": 2, "static_batch_size": 4,
         "hf_batch_size": 4, "methods_eval_limit": 2, "methods": ["none", "lora"],
         "paper_shapes": ["tiny-qwen2.5"], "paper_methods": ["full", "adagradselect"], "paper_steps": 1, "paper_warmup": 1, "harness_window_only": True,
         "paper_set": ["train.batch_size=1", "train.grad_accum=2"]}
# pack_tokens: twice the quick batch's tokens (16,384 would make 65 rows of 256, and the plain loop's
# full-vocabulary logits of a 128k vocabulary over them 8.5 GB).
QUICK_SET = ("task.train.limit=8", "train.max_seq_len=256", "eval.max_new_tokens=4", "train.pack_tokens=480")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with gsm8k/{train,test}.jsonl and models/<org>__<name>/ (paper shapes)")
    p.add_argument("--model", default="smollm2-135m", help="conf/model/<name>.yaml (tests: tiny-llama3.2)")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--train-rows", nargs="+", default=list(TRAIN_ROWS), choices=TRAIN_ROWS)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="conf/method/<name>.yaml names")
    p.add_argument("--paper-shapes", nargs="+", default=list(PAPER_SHAPES))
    p.add_argument("--paper-methods", nargs="+", default=list(PAPER_METHODS))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5,
                   help="full-parameter methods (conf/experiment/adagradselect_paper.yaml lr_by_method: full)")
    p.add_argument("--lora-lr", type=float, default=2e-4, help="LoRA (the same file's lr_by_method: lora)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=60, help="timed steps of every train row, after --warmup")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--full-epoch", action="store_true", help="plain and HF Trainer rows train the whole epoch too")
    p.add_argument("--harness-window-only", action="store_true",
                   help="harness rows train only warm-up + timed steps (no epoch_s)")
    p.add_argument("--fast-set", nargs="*", default=list(FAST_SETTINGS), metavar="KEY=VALUE",
                   help="the overrides of harness_fast (and the batches of plain_same_batches_as_fast)")
    p.add_argument("--methods-set", nargs="*", default=list(METHOD_SETTINGS), metavar="KEY=VALUE",
                   help="the overrides every method row trains with")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every row")
    p.add_argument("--eval-limit", type=int, default=None, help="eval part: first N test prompts (default all)")
    p.add_argument("--identical-n", type=int, default=256, help="eval part: prompts compared in fp32")
    p.add_argument("--static-batch-size", type=int, default=512)
    p.add_argument("--hf-batch-size", type=int, default=256)
    p.add_argument("--methods-eval-limit", type=int, default=None, help="methods part: first N test prompts")
    p.add_argument("--paper-set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for paper_config rows")
    p.add_argument("--paper-steps", type=int, default=6)
    p.add_argument("--paper-warmup", type=int, default=3)
    p.add_argument("--cold-processes", type=int, default=3, help="cold_start part: how many new processes")
    p.add_argument("--cold-child", type=Path, default=None, help=argparse.SUPPRESS)  # one cold_start process's output
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="train rows: profile this many more steps (torch.profiler) after all else is measured; "
                        "eval part: profile the static engine on the first --profile-prompts prompts")
    p.add_argument("--profile-prompts", type=int, default=512)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: a few steps and prompts, 4 methods, one tiny shape")
    p.add_argument("--fresh", action="store_true", help="start --out afresh instead of adding to it")
    p.add_argument("--out", type=Path, default=Path("docs/perf/real_workload.json"))


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """--quick's settings, in place of the defaults."""
    if args.quick:
        vars(args).update(QUICK)
        args.set = [*QUICK_SET, *args.set]
    return args


# -- configs -------------------------------------------------------------------------------------

def on_device(settings, device: torch.device) -> tuple[list[str], list[str]]:
    """The settings this device runs, and a note for each GPU-only one left out."""
    if device.type == "cuda":
        return list(settings), []
    return [s for s in settings if s not in GPU_ONLY], [GPU_ONLY[s] for s in settings if s in GPU_ONLY]


def row_overrides(args, method: str = "full", extra=()) -> list[str]:
    """The `slmbench` overrides of a reference-workload row."""
    lr = args.lora_lr if method.startswith("lora") else args.lr
    return reference_overrides(args.model, args.data_dir, args.batch_size, lr, args.seed, args.device, method,
                               [f"train.throughput_warmup_steps={args.warmup}", *extra, *args.set])


def config(args, method: str = "full", extra=()):
    """The composed config of a reference-workload row, and its `slmbench` overrides."""
    overrides = row_overrides(args, method, extra)
    return compose(overrides), overrides


def evaluation_overrides(args) -> list[str]:
    """How an evaluated harness row evaluates: the static engine on the test set (--methods-eval-limit)."""
    limit = "null" if args.methods_eval_limit is None else args.methods_eval_limit
    return ["eval.engine=static", f"eval.batch_size={args.static_batch_size}", f"eval.limit={limit}"]


def settings_of(cfg) -> dict:
    t = cfg.train
    return {"batching": t.batching, "fast_path": t.fast_path, "compile": bool(t.compile), "batch_size": t.batch_size,
            "pack_len": t.pack_len if t.batching == "packed" else None,
            "pack_tokens": t.pack_tokens if t.batching == "packed" else None, "lr": t.lr,
            "cuda_graphs": bool(t.cuda_graphs),
            "grad_accum": t.grad_accum, "gradient_checkpointing": bool(t.gradient_checkpointing),
            "max_seq_len": t.max_seq_len, "precision": t.precision}


def describe_workload(report: dict, args, run: Run) -> None:
    """The workload's figures, once per file (the first part that builds the default run)."""
    if report.get("workload", {}).get("model") == run.cfg.model.name:
        return
    epoch = draw_batches(run, run.steps_per_epoch)
    report["workload"] = {
        "model": run.cfg.model.name, "task": run.cfg.task.name, "train_examples": len(run.examples),
        "epoch_steps": run.steps_per_epoch, "batch": run.cfg.train.batch_size, "precision": run.precision,
        "lr": args.lr, "lora_lr": args.lora_lr, "seed": args.seed, "max_seq_len": run.cfg.train.max_seq_len,
        "test_prompts": sum(len(exs) for exs in run.task.eval_sets().values()),
        "mean_real_tokens_per_batch": sum(real_tokens(b) for b in epoch) / len(epoch),
        "padding_fraction": padding_fraction(epoch), "timed_window": {"warmup": args.warmup, "steps": args.steps}}


# -- train -----------------------------------------------------------------------------------------

def pair_rows(args, report: dict, extra, whole: bool) -> tuple[dict, dict]:
    """An overhead pair: the run of the config (its `extra` overrides) and the plain eager loop on
    a fresh model of the same config, fed the batches the run trains on, taking turns in one
    process (lab/loops.py PlainTurns). Both see each of the window's batch shapes once,
    untimed, before their first step (lab/loops.py warm_shapes). The run trains to the end
    of its epoch and is evaluated when `whole` (harness_default), else only the timed window."""
    cfg, overrides = config(args, extra=[*extra, *evaluation_overrides(args)])
    plain = {"loop": "plain eager (lab/loops.py PlainLoop), in turns with its harness twin",
             "overrides": row_overrides(args, extra=extra), "batching": cfg.train.batching}
    harness = {"loop": "harness (bench/run/recipe.py Run), in turns with its plain twin", "overrides": overrides,
               "settings": settings_of(cfg), "compile": bool(cfg.train.compile), "notes": []}
    if cfg.train.grad_accum != 1:
        raise ValueError(f"overhead pairs compare one batch a step: train.grad_accum={cfg.train.grad_accum}, expected 1")
    plain_figures = {}

    def measure():
        run = Run.build(cfg)
        if cfg.train.batching == "random":  # the default run's batches: the workload's own figures
            describe_workload(report, args, run)
        window = run.total_steps if args.full_epoch else min(args.warmup + args.steps, run.total_steps)
        batches = draw_batches(run, window + args.profile)  # profiled steps last, left out of the timing
        plain_model = Run.build(cfg).model  # seeded: the run's initial weights
        warmed = {"plain": warm_shapes(plain_model, batches, run.device, run.precision),
                  "harness": warm_shapes(run.model, batches, run.device, run.precision)}
        lr = run.facts["schedule"]["lr"]  # train.lr_scaling: the lr the harness row trains at
        twin = PlainTurns(PlainLoop(plain_model, "full", lr, cfg.train.grad_clip, run.device, run.precision),
                          batches, args.profile, lambda: resident_bytes(run.model, run.state.optimizer, run.device))
        del plain_model
        until = run.total_steps if whole and not args.harness_window_only else window
        result = {**run_harness_window(run, args.warmup, args.steps, until, twin), "warmed_shapes": warmed["harness"]}
        plain_figures.update(twin.figures(args.warmup), warmed_shapes=warmed["plain"],
                             padding_fraction=padding_fraction(batches[:window]))
        del twin
        return {**result, **evaluated(run, whole), **profile_more_steps(args, run)}
    guarded(measure, harness, args)
    plain.update(plain_figures, status=harness["status"], **{k: harness[k] for k in ("error",) if k in harness})
    return plain, harness


def evaluated(run: Run, whole: bool) -> dict:
    """`whole`: the trained run evaluated on the test set by the static engine, its accuracy with the 95% CI."""
    if not whole:
        return {}
    run.evaluate()
    metrics = run.metrics()
    return {"accuracy": metrics["accuracy"], "ci95": metrics["accuracy_ci95"], "eval_s": metrics["eval_wall_clock_s"],
            "final_train_loss": metrics["final_train_loss"]}


def hf_settings(args, cfg, run: Run) -> dict:
    """TrainingArguments as a user would set them for this workload: the run's batch, lr, schedule,
    clipping and seed; bf16; length-grouped batches; no eval, no saving, no reporting."""
    import inspect
    from transformers import TrainingArguments

    t, gpu = cfg.train, run.device.type == "cuda"
    steps = -1 if args.full_epoch else min(args.warmup + args.steps, run.total_steps)
    grouping = ({"group_by_length": True} if "group_by_length" in inspect.signature(TrainingArguments).parameters
                else {"train_sampling_strategy": "group_by_length"})  # transformers 5 renamed it
    return {"per_device_train_batch_size": t.batch_size, "gradient_accumulation_steps": t.grad_accum,
            "learning_rate": t.lr, "num_train_epochs": 1, "max_steps": steps, "lr_scheduler_type": t.schedule,
            "warmup_steps": t.warmup_steps, "weight_decay": t.weight_decay, "max_grad_norm": t.grad_clip or 0.0,
            "seed": args.seed, "bf16": gpu, "use_cpu": not gpu, **grouping, "report_to": "none",
            "save_strategy": "no", "eval_strategy": "no", "logging_strategy": "no", "disable_tqdm": True,
            "remove_unused_columns": False, "dataloader_num_workers": 0}


def hf_trainer_row(args, report: dict) -> dict:
    cfg, overrides = config(args)
    row = {"loop": "HF transformers.Trainer on the run's tokenized examples (run.examples)", "overrides": overrides}
    if run_device(args).type != "cuda":
        row["notes"] = ["bf16 left out: GPU only here (CPU runs fp32)"]

    def measure():
        run = Run.build(cfg)
        row["settings"] = hf_settings(args, cfg, run)
        return run_hf_trainer(run.model, run.examples, run.tokenizer.pad_token_id, row["settings"], args.warmup,
                              run.device)
    return guarded(measure, row, args)


def harness_row(args, extra, notes) -> dict:
    """The run of the config, trained to the end of its epoch, then evaluated on the test set by
    the static engine: accuracy with its 95% CI, and the loss curve against real tokens seen
    (lab/loss_curves.py draws the default and fast rows together). --harness-window-only:
    trained for the timed window only (then evaluated)."""
    cfg, overrides = config(args, extra=[*extra, *evaluation_overrides(args)])
    row = {"loop": "harness (bench/run/recipe.py Run)", "overrides": overrides, "settings": settings_of(cfg),
           "compile": bool(cfg.train.compile), "notes": notes}

    def measure():
        row["inductor_cache_files_before"] = inductor_cache_files() if cfg.train.compile else None
        compiled_before = compile_seconds()
        run = Run.build(cfg)
        until = min(args.warmup + args.steps, run.total_steps) if args.harness_window_only else run.total_steps
        row["settings"].update(epoch_steps=run.steps_per_epoch, schedule=run.facts["schedule"])
        result = {**run_harness_window(run, args.warmup, args.steps, until), "warmed_shapes": None,
                  "first_steps": first_steps(run, compiled_before)}
        return {**result, **evaluated(run, True), **profile_more_steps(args, run)}
    return guarded(measure, row, args)


def first_steps(run: Run, compiled_before: dict[str, float]) -> dict:
    """Where a trained run's first steps went: torch.compile's phases since `compiled_before` (the
    chunked loss's kernel, and the layers under train.compile), and the decoder graphs' capture."""
    graph = run.state.decoder_graph if run.state is not None else None
    return {"compile_s": compile_seconds_since(compiled_before),
            "decoder_graph_capture_s": graph.capture_seconds if graph is not None else None}


def inductor_cache_files() -> int:
    """Files in Inductor's disk cache before a compiled row: 0 means it compiled everything anew."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return sum(1 for path in Path(cache_dir()).rglob("*") if path.is_file()) if Path(cache_dir()).exists() else 0


def profile_more_steps(args, run: Run) -> dict:
    """--profile: that many more steps of the run under torch.profiler, once everything else of the
    row is measured (its figures, evaluation included, are untouched by the profiler)."""
    if not args.profile or run.state is None:
        return {}
    profiler = Profiler(run.state.step, run.device, args.profile)
    run.train(until=run.state.step + args.profile, observers=[profiler])
    return profiled(profiler.summary())


def run_device(args) -> torch.device:
    return resolve_device(args.device)


def train_part(args, report: dict, save) -> None:
    fast, notes = on_device(args.fast_set, run_device(args))
    # without compile (the plain loop stays eager)
    eager_fast, eager_notes = on_device([s for s in args.fast_set if not s.startswith("train.compile=")],
                                        run_device(args))
    # The plain loop computes HF's loss, eagerly: its harness pair too (neither knob changes a batch).
    plain_like = [s for s in eager_fast if not s.startswith(("train.fast_path=", "train.cuda_graphs="))]
    # (plain row, harness row): the batching's overrides, and whether the harness trains its epoch and is evaluated
    pairs = {("plain_eager", "harness_default"): ([], True),
             ("plain_length_grouped", "harness_length_grouped"): (LENGTH_GROUPED, False),
             ("plain_same_batches_as_fast", "harness_same_batches_as_fast"): (plain_like, False)}
    pair_of = {name: names for names in pairs for name in names}
    measures = {"hf_trainer": lambda: hf_trainer_row(args, report),
                "harness_fast_eager": lambda: harness_row(args, eager_fast, eager_notes),
                "harness_fast": lambda: harness_row(args, fast, notes)}
    report.setdefault("train", {})
    measured = set()
    for name in args.train_rows:
        if name in measured:
            continue
        if name in pair_of:  # a pair is measured together, whichever of its rows is asked for
            names = pair_of[name]
            rows = dict(zip(names, pair_rows(args, report, *pairs[names])))
        else:
            rows = {name: measures[name]()}
        for row_name, row in rows.items():
            report["train"][row_name] = stamped(row, report)
        measured.update(rows)
        save()


# -- eval ------------------------------------------------------------------------------------------

def eval_prompts(run: Run, limit: int | None) -> tuple[list, list[str]]:
    examples = [ex for exs in run.task.eval_sets().values() for ex in limit_examples(exs, limit)]
    return examples, [build_prompt(run.tokenizer, ex.prompt, run.task.use_chat_template) for ex in examples]


def accuracy(run: Run, examples, texts: list[str]) -> float:
    primary = run.task.primary_metric
    return sum(bool(run.task.score(text, ex)[primary]) for ex, text in zip(examples, texts)) / max(1, len(texts))


def same(a: list[str], b: list[str]) -> list[int]:
    return [sum(x == y for x, y in zip(a, b)), len(a)]


def measure_engines(args, run: Run) -> dict:
    """Both engines on every prompt at the run's precision, then both in fp32 on the first N."""
    examples, prompts = eval_prompts(run, args.eval_limit)
    hf_s, hf_texts = timed_generation(run, prompts, "hf", args.hf_batch_size, run.precision)
    static_s, static_texts = timed_generation(run, prompts, "static", args.static_batch_size, run.precision)
    n = min(args.identical_n, len(prompts))
    _, hf_fp32 = timed_generation(run, prompts[:n], "hf", args.hf_batch_size, "fp32")
    _, static_fp32 = timed_generation(run, prompts[:n], "static", args.static_batch_size, "fp32")
    gpu, eval_cfg = run.device.type == "cuda", run.cfg.eval
    profile = profile_generation(run, prompts[:args.profile_prompts], args.static_batch_size) if args.profile else {}
    return {**profile, "prompts": len(prompts), "precision": run.precision, "max_new_tokens": eval_cfg.max_new_tokens,
            "hf": {"seconds": hf_s, "batch_size": args.hf_batch_size, "accuracy": accuracy(run, examples, hf_texts)},
            "static": {"seconds": static_s, "batch_size": args.static_batch_size, "refill": bool(eval_cfg.refill),
                       "check_every": eval_cfg.check_every, "cuda_graphs": bool(eval_cfg.cuda_graphs) and gpu,
                       "accuracy": accuracy(run, examples, static_texts), "identical_fp32": same(static_fp32, hf_fp32),
                       "identical_bf16": same(static_texts, hf_texts) if run.precision == "bf16" else None},
            "notes": [] if gpu else ["bf16 and CUDA graphs left out: GPU only here (CPU runs fp32, eagerly)"]}


def profile_generation(run: Run, prompts: list[str], batch_size: int) -> dict:
    """The static engine on `prompts` under torch.profiler (after the timed runs: CUDA graphs
    captured, kernels compiled). GPU busy = summed kernel time over the wall time."""
    with torch.profiler.profile(activities=profiler_activities(run.device)) as prof:
        seconds, _ = timed_generation(run, prompts, "static", batch_size, run.precision)
    return {"profile": {"prompts": len(prompts), **profile_figures(prof.key_averages(), seconds, run.device)}}


def eval_part(args, report: dict, save) -> None:
    cfg, overrides = config(args, method="none")
    row = {"model_weights": "pretrained (method=none: the engines are compared, not a fine-tuned model)",
           "overrides": overrides}

    def measure():
        run = Run.build(cfg)
        describe_workload(report, args, run)
        return measure_engines(args, run)
    report["eval"] = stamped(guarded(measure, row, args), report)
    save()


# -- methods ---------------------------------------------------------------------------------------

def method_row(args, method: str) -> dict:
    """One epoch and the evaluation, in `slmbench`'s order (bench/cli.py run_job)."""
    settings, notes = on_device(args.methods_set, run_device(args))
    limit = "null" if args.methods_eval_limit is None else args.methods_eval_limit
    extra = [*settings, "eval.engine=static", f"eval.batch_size={args.static_batch_size}", f"eval.limit={limit}"]
    cfg, overrides = config(args, method=method, extra=extra)
    row = {"method": method, "overrides": overrides, "settings": settings_of(cfg), "notes": notes}

    def measure():
        run = Run.build(cfg)
        accum = cfg.train.grad_accum
        tokens = step_tokens(draw_batches(run, run.total_steps * accum), accum)
        log = StepLog()
        run.train(observers=[log])
        run.evaluate()
        metrics, seconds, warmup = run.metrics(), log.seconds, args.warmup
        timed = sum(seconds[warmup:])
        return {"accuracy": metrics["accuracy"], "ci95": metrics["accuracy_ci95"],
                "peak_gpu_memory_gib": metrics["peak_gpu_memory_gib"], "train_s": metrics["train_wall_clock_s"],
                "tokens_per_s": sum(tokens[warmup:]) / timed if timed else None,
                "median_step_s": metrics["median_step_s"], "train_steps": metrics["train_steps"],
                "eval_s": metrics["eval_wall_clock_s"], "final_train_loss": metrics["final_train_loss"],
                "eval_prompts": sum(s["n"] for s in run.accuracy_by_task.values())}
    return guarded(measure, row, args)


def methods_part(args, report: dict, save) -> None:
    rows = {row["method"]: row for row in report.get("methods", [])}
    for method in args.methods:
        rows[method] = stamped(method_row(args, method), report)
        report["methods"] = list(rows.values())
        save()


# -- paper config ----------------------------------------------------------------------------------

def paper_row(args, shape: str, method: str) -> dict:
    """`+experiment=adagradselect_paper`'s training settings (grad_accum, checkpointing, max_seq_len,
    batch, precision) on GSM8K (its MetaMathQA is not among the local data), a few steps."""
    precision = [] if run_device(args).type == "cuda" else ["train.precision=auto"]  # bf16: GPU only here
    extra = ["+experiment=adagradselect_paper", f"seed={args.seed}", f"device={args.device}",
             f"train.throughput_warmup_steps={args.paper_warmup}", *precision, *args.set, *args.paper_set]
    overrides = lab_overrides(shape, method, args.paper_warmup + args.paper_steps, args.data_dir, extra)
    # The experiment's lr interpolates Hydra's runtime choice, which a plain compose lacks: its value here.
    overrides.append(f"train.lr={compose(overrides).lr_by_method[method]}")
    cfg = compose(overrides)
    row = {"shape": shape, "method": method, "overrides": overrides, "settings": settings_of(cfg),
           "task": "gsm8k (the experiment's metamathqa is not among the local data)",
           "notes": [] if not precision else ["bf16 left out: GPU only here (CPU runs fp32)"]}

    def measure():
        result = run_harness(Run.build(cfg), args.paper_warmup, args.paper_steps)
        return {"median_step_s": result["median_step_s"], "peak_gpu_gib": result["peak_allocated_gib"],
                "tokens_per_s": result["tokens_per_s"], "first_step_s": result["first_step_s"],
                "step_seconds": result["step_seconds"]}
    return guarded(measure, row, args)


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's memory and step time over full fine-tuning's on the same shape."""
    full = {r["shape"]: r for r in rows if r["method"] == "full" and r.get("status") == "ok"}
    for row in rows:
        base = full.get(row["shape"])
        ok = base is not None and row.get("status") == "ok"
        mem = ok and row["peak_gpu_gib"] is not None and base["peak_gpu_gib"]
        row["memory_ratio_vs_full"] = row["peak_gpu_gib"] / base["peak_gpu_gib"] if mem else None
        row["time_ratio_vs_full"] = row["median_step_s"] / base["median_step_s"] if ok else None
    return rows


def paper_part(args, report: dict, save) -> None:
    # A call replaces only the (shape, method) rows it measures: a later call with fewer methods
    # keeps an earlier call's full row, which its ratios need.
    measured = {(shape, method) for shape in args.paper_shapes for method in args.paper_methods}
    rows = [r for r in report.get("paper_config", []) if (r["shape"], r["method"]) not in measured]
    for shape in args.paper_shapes:
        for method in args.paper_methods:
            rows.append(stamped(paper_row(args, shape, method), report))
            report["paper_config"] = with_ratios(rows)
            save()


# -- cold start ------------------------------------------------------------------------------------

def cold_epoch(args) -> dict:
    """In this process (new, its compile caches empty): `harness_fast`'s run built and trained
    through its epoch, not evaluated; where its first steps went, as `harness_row` records it."""
    fast, notes = on_device(args.fast_set, run_device(args))
    cfg, overrides = config(args, extra=fast)
    row = {"overrides": overrides, "notes": notes, "compile": bool(cfg.train.compile)}

    def measure():
        row["inductor_cache_files_before"] = inductor_cache_files() if cfg.train.compile else None
        start = time.perf_counter()
        run = Run.build(cfg)
        build_s = time.perf_counter() - start
        compiled_before = compile_seconds()
        log = StepLog()
        run.train(observers=[log])
        seconds = log.seconds
        timed = sorted(seconds[args.warmup:])
        return {"build_s": build_s, "epoch_s": sum(seconds), "steps": len(seconds),
                "first_steps_s": sum(seconds[:args.warmup]), "median_step_s": timed[len(timed) // 2] if timed else None,
                "first_steps": first_steps(run, compiled_before)}
    return guarded(measure, row, args)


def child_argv(args) -> list[str]:
    """What a cold_start process needs of this call's arguments to compose `harness_fast`'s config
    (--quick's settings are already in `args`: they are passed as themselves, not as --quick)."""
    argv = ["--model", args.model, "--device", args.device, "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--seed", str(args.seed), "--warmup", str(args.warmup),
            "--fast-set", *args.fast_set, "--set", *args.set]
    return [*argv, "--data-dir", str(args.data_dir)] if args.data_dir is not None else argv


def cold_start_part(args, report: dict, save) -> None:
    """`--cold-processes` new processes, one after the other, each with empty Inductor and Triton
    caches of its own: the spread of a cold epoch (a run that compiles pays it once per machine
    and code; every later run of a sweep finds the caches filled)."""
    # The children import this very code (an installed copy elsewhere on the path may be older).
    code_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")]))
    processes = []
    for _ in range(args.cold_processes):
        with tempfile.TemporaryDirectory(prefix="slmbench-cold-") as tmp:
            out = Path(tmp) / "epoch.json"
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(tmp) / "inductor"),
                   "TRITON_CACHE_DIR": str(Path(tmp) / "triton"), "PYTHONPATH": python_path}
            proc = subprocess.run([sys.executable, "-m", "lab", "real_workload", *child_argv(args),
                                   "--cold-child", str(out)], env=env, capture_output=True, text=True)
            row = (json.loads(out.read_text()) if out.exists() else
                   {"status": "failed", "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"})
        processes.append(stamped(row, report))
        epochs = [p["epoch_s"] for p in processes if p.get("status") == "ok"]
        report["cold_start"] = {"processes": processes, "epoch_s": epochs}
        save()


# -- the file --------------------------------------------------------------------------------------

def start_report(args, command: str) -> dict:
    """The file an earlier call wrote (its other parts kept), or a fresh one; this call's header."""
    device = run_device(args)
    env = environment(device)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    commit = {"git_sha": env["git_sha"], "dirty": env["dirty"], "worktree_tree_sha": worktree_tree_sha()}
    report.update(device=env["device_name"], date=date, commit=commit,
                  command=command, env=env)
    report.setdefault("parts_run", {})
    return report


def stamped(row: dict, report: dict) -> dict:
    """A row records the call that measured it (its `date`, a key of `parts_run`): a file filled
    over several calls says which command, commit and device wrote each row."""
    return {**row, "measured_by": report["date"]}


def record_call(report: dict, part: str) -> None:
    """`parts_run[part]`: every call that measured some of the part, oldest first (one dict per
    call in files written before rows were stamped)."""
    calls = report["parts_run"].get(part, [])
    calls = [calls] if isinstance(calls, dict) else calls
    call = {"command": report["command"], "date": report["date"], "commit": report["commit"], "device": report["device"]}
    report["parts_run"][part] = [c for c in calls if c["date"] != call["date"]] + [call]


PART_RUNNERS = {"train": train_part, "eval": eval_part, "methods": methods_part, "paper_config": paper_part,
                "cold_start": cold_start_part}


def main(args: argparse.Namespace, command: str) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.cold_child is not None:  # one process of the cold_start part: its epoch, to the parent's file
        write_json_atomic(args.cold_child, cold_epoch(args))
        return {}
    report = start_report(args, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json_atomic(args.out, report)

    for part in args.parts:
        record_call(report, part)
        PART_RUNNERS[part](args, report, save)
        release(run_device(args))
        save()
    print(real_workload_summary(report))
    return report

