"""`python -m lab shapes`: the harness's training against a plain PyTorch loop, and eval throughput.

Every row is an `slmbench` run of the product's own configs (lab/workload.py): for each
model (`conf/model/<name>.yaml`; hub models as their real shape with random weights from
`--data-dir`) and each method, the run object trains on the GSM8K task pipeline's own batches;
in the same process a plain loop trains `full`, `static25` and `lora` on the very same batches.
One table (harness/plain and method/full ratios) is printed and everything is written as JSON,
which `python -m lab report` turns into docs/performance.md. Figures are measurements,
never asserted.

Example:
    python -m lab shapes --data-dir ../shared/data --models llama3.2-1b --methods full lora static25 \
        --plain full static25 lora --fast-methods full --out perf.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
from pathlib import Path

import torch

from bench.loss import FAST_PATHS
from bench.records import recorder as records
from bench.run.recipe import Run
from bench.runtime import resolve_device
from lab.loops import FixedBlocks, choose_blocks, release, run_eval, run_harness, run_plain
from lab.table import format_table, table_rows
from lab.workload import compose, draw_batches, lab_overrides

log = logging.getLogger("lab.shapes")
STATIC = "static25"  # the fixed-block selection both loops share (lab/loops.py)
STATIC_BASE = "full"  # its config: full fine-tuning's, with the FixedBlocks method object


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder with gsm8k/{train,test}.jsonl and models/<org>__<name>/ (config + tokenizer)")
    p.add_argument("--models", nargs="+", default=["llama3.2-1b"], help="conf/model/<name>.yaml names")
    p.add_argument("--methods", nargs="*", default=["full", "lora", STATIC],
                   help=f"harness rows: conf/method/<name>.yaml names, optionally with knobs "
                        f"(adagradselect:policy=keep), or {STATIC} (the plain loop's block set)")
    p.add_argument("--plain", nargs="*", default=["full", STATIC, "lora"], help="plain-loop rows: full static25 lora")
    p.add_argument("--fast-methods", nargs="*", default=[], help="harness methods run again with the fast path")
    p.add_argument("--fast-path", default="chunked_ce", choices=FAST_PATHS)
    p.add_argument("--compile", action="store_true",
                   help="each fast-path row is also run with the decoder layers compiled (train.compile)")
    p.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every plain/harness pair this many times, alternating; the table takes each one's fastest")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping (both loops)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="more slmbench overrides for every harness row (e.g. train.gradient_checkpointing=true)")
    p.add_argument("--block-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after each harness row's timed steps, profile this many more (torch.profiler)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--eval-models", nargs="*", default=["qwen2.5-0.5b"])
    p.add_argument("--eval-engines", nargs="*", default=["static", "hf"])
    p.add_argument("--eval-limit", type=int, default=None, help="first N GSM8K test prompts (default all 1,319)")
    p.add_argument("--eval-max-new-tokens", type=int, default=256)
    p.add_argument("--static-batch-size", type=int, default=660, help="rows per batch of the static engine")
    p.add_argument("--hf-batch-size", type=int, default=256, help="rows per batch of HF generate")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("perf.json"))


def environment(device: torch.device) -> dict:
    """What a run record's `env` holds (bench/records/recorder.py: git sha, dirty, versions, device), plus Python."""
    return {**records.environment(device), "python": platform.python_version()}


def row_config(args, model: str, method: str, fast: bool = False, compiled: bool = False):
    """The composed config of one row; `row["overrides"]` re-runs it as `slmbench <overrides>`."""
    base = STATIC_BASE if method == STATIC else method
    extra = [f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", f"train.grad_clip={args.grad_clip or 'null'}",
             f"train.throughput_warmup_steps={args.warmup}", f"seed={args.seed}", f"device={args.device}",
             f"train.fast_path={args.fast_path if fast else 'none'}", f"train.compile={str(compiled).lower()}",
             *args.set]
    overrides = lab_overrides(model, base, args.warmup + args.steps + args.profile, args.data_dir, extra)
    return compose(overrides), overrides


def build_method(name: str, args):
    """`static25` is the plain loop's fixed block set as a method (the blocks are chosen from the
    model's depth when it is prepared); any other name is composed from conf/method (with knobs:
    `adagradselect:policy=keep,k_percent=10`) by the run itself."""
    return FixedBlocks(args.block_fraction, args.seed) if name == STATIC else None


def guarded(run, row: dict, args) -> dict:
    """One measurement; an OOM or a failure becomes the row's status and the benchmark goes on."""
    try:
        row.update(run(), status="ok")
    except torch.OutOfMemoryError as err:
        row.update(status="oom", error=str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001 - recorded in the row and logged, the other rows still run
        log.exception("%s %s %s failed", row.get("shape"), row.get("loop"), row.get("method"))
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    release(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if row.get("compile"):
        torch._dynamo.reset()
    log.info("%s", {k: v for k, v in row.items() if k not in ("blocks", "losses", "profile_table", "overrides")})
    return row


def run_training(args, save) -> list[dict]:
    """`save(rows)` after each row, so a run cut short (a device call's time limit) keeps what it measured."""
    rows = []
    for model in args.models:
        base = {"shape": model, "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
        # Plain and harness rows of one method run back to back, so slow drift hits both alike.
        names = list(dict.fromkeys(args.plain + args.methods))
        for repeat, name in [(r, n) for r in range(args.repeats) for n in names]:
            base["repeat"] = repeat
            if name in args.plain:
                rows.append(plain_row(args, model, base, name))
                save(rows)
            if name in args.methods:
                rows.append(harness_row(args, model, base, name))
                save(rows)
        for name in args.fast_methods:
            rows.append(harness_row(args, model, base, name, fast=True))
            save(rows)
            if args.compile:
                rows.append(harness_row(args, model, base, name, fast=True, compiled=True))
                save(rows)
    return rows


def plain_row(args, model: str, base: dict, name: str) -> dict:
    """The plain loop on a fresh model of the same config, fed the harness row's batches."""
    cfg, overrides = row_config(args, model, "full")
    row = {**base, "loop": "plain", "method": name, "fast_path": "none", "compile": False, "overrides": overrides}

    def figures():
        run = Run.build(cfg)
        row["gradient_checkpointing"] = bool(cfg.train.gradient_checkpointing)
        batches = draw_batches(run, args.warmup + args.steps)
        return run_plain(run.model, name, batches, args.warmup, args.lr, args.grad_clip or None, run.device, run.precision,
                         choose_blocks(run.model.config.num_hidden_layers, args.block_fraction, args.seed))
    return guarded(figures, row, args)


def harness_row(args, model: str, base: dict, name: str, fast: bool = False, compiled: bool = False) -> dict:
    cfg, overrides = row_config(args, model, name, fast, compiled)
    row = {**base, "loop": "harness", "method": name, "fast_path": cfg.train.fast_path, "compile": compiled,
           "gradient_checkpointing": bool(cfg.train.gradient_checkpointing), "overrides": overrides}

    def figures():
        run = Run.build(cfg, method=build_method(name, args))
        return run_harness(run, args.warmup, args.steps, args.profile)
    return guarded(figures, row, args)


def run_evaluation(args) -> list[dict]:
    rows = []
    for model in args.eval_models:
        cfg, overrides = row_config(args, model, "none")
        cfg.eval.limit = args.eval_limit
        run = Run.build(cfg)
        outputs = {}
        for engine in args.eval_engines:
            batch = args.static_batch_size if engine == "static" else args.hf_batch_size

            def figures(engine=engine, batch=batch, run=run):
                result, texts = run_eval(run, engine, batch, args.eval_max_new_tokens)
                outputs[engine] = texts
                return result
            rows.append(guarded(figures, {"shape": model, "loop": "eval", "method": engine, "overrides": overrides}, args))
        if "static" in outputs and "hf" in outputs:
            same = sum(a == b for a, b in zip(outputs["static"], outputs["hf"]))
            for row in rows[-len(args.eval_engines):]:
                row["identical_to_other_engine"] = same / len(outputs["hf"])
        del run
        release(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return rows


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main(args: argparse.Namespace, command: str) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": command,
              "env": environment(device),
              "knobs": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "train": [], "eval": [], "table": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(train_rows: list[dict]) -> None:
        report["train"], report["table"] = train_rows, table_rows(train_rows)
        args.out.write_text(json.dumps(report, indent=2))

    save([] if args.skip_train else run_training(args, save))
    report["eval"] = run_evaluation(args) if args.eval_models and args.eval_engines else []
    args.out.write_text(json.dumps(report, indent=2))
    for row in report["train"]:
        if row.get("profile_table"):
            print(f"\nprofile {row['shape']} {row['loop']} {row['method']} fast={row['fast_path']}: "
                  f"GPU busy {_fraction(row.get('gpu_busy_fraction'))}\n{row['profile_table']}")
    print(format_table(report))
    return report

