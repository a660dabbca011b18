"""`python -m bench.perf.lab`: the harness's training loop against a plain PyTorch loop, and eval throughput.

For each shape (random init, real tokenizer, real GSM8K rows, fixed batch and sequence length)
and each method, the harness's own loop runs a fixed number of steps; in the same process a plain
loop runs `full`, `static25` and `lora`. One table (harness/plain and method/full ratios) is
printed and everything is written as JSON, which `python -m bench.perf.report` turns into
docs/performance.md. Figures are measurements, never asserted.

Example (the device run of docs/performance.md):
    python -m bench.perf.lab --shapes qwen2.5-0.5b llama3.2-1b phi4-mini --methods full lora static25 \
        --fast-methods full --out perf.json
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import platform
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from bench.records import recorder as records
from bench.loss import FAST_PATHS
from bench.perf.data import DEFAULT_DATA_DIR, REPO, build_model, eval_prompts, get_shape, load_tokenizer, packed_batches
from bench.perf.loops import (FixedBlocks, choose_blocks, method_config, release, run_eval, run_harness, run_plain,
                              train_config)
from bench.perf.table import format_table, table_rows

log = logging.getLogger("bench.perf.lab")
STATIC = "static25"  # the fixed-block selection both loops share (bench/perf/loops.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.perf.lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "llama3.2-1b", "phi4-mini"])
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
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=None, help="default: the shape's (bench/perf/data.py SHAPES)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--grad-clip", type=float, default=1.0, help="0: no clipping (both loops)")
    p.add_argument("--gradient-checkpointing", choices=["shape", "on", "off"], default="shape",
                   help="shape: as the shape's reference figures (Phi-4-mini on); on/off: every row of both loops")
    p.add_argument("--block-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after each harness row's timed steps, profile this many more (torch.profiler)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--eval-shapes", nargs="*", default=["qwen2.5-0.5b"])
    p.add_argument("--eval-engines", nargs="*", default=["static", "hf"])
    p.add_argument("--eval-limit", type=int, default=None, help="first N GSM8K test prompts (default all 1,319)")
    p.add_argument("--eval-max-new-tokens", type=int, default=256)
    p.add_argument("--static-batch-size", type=int, default=660, help="rows per batch of the static engine")
    p.add_argument("--hf-batch-size", type=int, default=256, help="rows per batch of HF generate")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=Path("perf.json"))
    return p.parse_args(argv)


def environment(device: torch.device) -> dict:
    """What a run record's `env` holds (bench/records/recorder.py: git sha, dirty, versions, device), plus Python."""
    return {**records.environment(device), "python": platform.python_version()}


def build_method(name: str, blocks: list[int]):
    """`name` is a conf/method yaml, optionally with knobs: `adagradselect:policy=keep,k_percent=10`."""
    if name == STATIC:
        return FixedBlocks(blocks)
    base, _, knobs = name.partition(":")
    path = REPO / "conf" / "method" / f"{base}.yaml"
    if not path.exists():
        known = sorted(f.stem for f in (REPO / "conf" / "method").glob("*.yaml"))
        raise ValueError(f"--methods: no {path}; known: {', '.join(known + [STATIC])}")
    return instantiate(method_config(base, knobs.split(",") if knobs else None))


def harness_train_config(args, shape, fast: bool, compiled: bool = False):
    return train_config(args.lr, args.grad_clip or None, shape.gradient_checkpointing,
                        args.fast_path if fast else "none", compiled)


def guarded(run, row: dict, device: torch.device) -> dict:
    """One measurement; an OOM or a failure becomes the row's status and the benchmark goes on."""
    try:
        row.update(run(), status="ok")
    except torch.OutOfMemoryError as err:
        row.update(status="oom", error=str(err).splitlines()[0])
    except Exception as err:  # noqa: BLE001 - recorded in the row and logged, the other rows still run
        log.exception("%s %s %s failed", row["shape"], row["loop"], row["method"])
        row.update(status="failed", error=f"{type(err).__name__}: {err}")
    release(device)
    if row.get("compile"):
        torch._dynamo.reset()
    log.info("%s", {k: v for k, v in row.items() if k != "blocks"})
    return row


def run_training(args, device: torch.device, save) -> list[dict]:
    """`save(rows)` after each row, so a run cut short (a device call's time limit) keeps what it measured."""
    rows = []
    for shape_name in args.shapes:
        shape = get_shape(shape_name)
        if args.gradient_checkpointing != "shape":
            shape = dataclasses.replace(shape, gradient_checkpointing=args.gradient_checkpointing == "on")
        batch_size = args.batch_size or shape.batch_size
        tokenizer = load_tokenizer(args.data_dir, shape)
        batches = packed_batches(tokenizer, args.data_dir, batch_size, args.seq_len, n_batches=4)
        n_layers = build_model(args.data_dir, shape, torch.device("meta"), args.seed).config.num_hidden_layers
        blocks = choose_blocks(n_layers, args.block_fraction, args.seed)
        base = {"shape": shape_name, "batch_size": batch_size, "seq_len": args.seq_len, "steps": args.steps,
                "warmup": args.warmup, "gradient_checkpointing": shape.gradient_checkpointing}
        # Plain and harness rows of one method run back to back, so slow drift hits both alike.
        names = list(dict.fromkeys(args.plain + args.methods))
        for repeat, name in [(r, n) for r in range(args.repeats) for n in names]:
            base["repeat"] = repeat
            if name in args.plain:
                row = {**base, "loop": "plain", "method": name, "fast_path": "none", "compile": False}
                rows.append(guarded(lambda: run_plain(build_model(args.data_dir, shape, device, args.seed), name,
                                                      batches, args.warmup, args.steps, args.lr,
                                                      args.grad_clip or None, device,
                                                      shape.gradient_checkpointing, blocks), row, device))
                save(rows)
            if name in args.methods:
                rows.append(harness_row(args, shape, base, name, blocks, batches, device, fast=False))
                save(rows)
        for name in args.fast_methods:
            rows.append(harness_row(args, shape, base, name, blocks, batches, device, fast=True))
            save(rows)
            if args.compile:
                rows.append(harness_row(args, shape, base, name, blocks, batches, device, fast=True, compiled=True))
                save(rows)
    return rows


def harness_row(args, shape, base, name, blocks, batches, device, fast: bool, compiled: bool = False) -> dict:
    cfg = harness_train_config(args, shape, fast, compiled)
    row = {**base, "loop": "harness", "method": name, "fast_path": cfg.fast_path, "compile": cfg.compile}
    return guarded(lambda: run_harness(build_model(args.data_dir, shape, device, args.seed), build_method(name, blocks),
                                       batches, args.warmup, args.steps, cfg, device, args.seed, args.profile),
                   row, device)


def run_evaluation(args, device: torch.device) -> list[dict]:
    rows = []
    for shape_name in args.eval_shapes:
        shape = get_shape(shape_name)
        tokenizer = load_tokenizer(args.data_dir, shape)
        prompts = eval_prompts(tokenizer, args.data_dir, args.eval_limit)
        model = build_model(args.data_dir, shape, device, args.seed).eval()
        outputs = {}
        for engine in args.eval_engines:
            batch = args.static_batch_size if engine == "static" else args.hf_batch_size
            row = {"shape": shape_name}

            def measure(engine=engine, batch=batch):
                result, texts = run_eval(model, tokenizer, prompts, engine, batch, args.eval_max_new_tokens,
                                         device, cuda_graphs=not args.no_cuda_graphs)
                outputs[engine] = texts
                return result
            rows.append(guarded(measure, {**row, "loop": "eval", "method": engine}, device))
        if "static" in outputs and "hf" in outputs:
            same = sum(a == b for a, b in zip(outputs["static"], outputs["hf"]))
            for row in rows[-len(args.eval_engines):]:
                row["identical_to_other_engine"] = same / len(prompts)
        del model
        release(device)
    return rows


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m bench.perf.lab " + " ".join(sys.argv[1:] if argv is None else argv),
              "env": environment(device),
              "knobs": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "train": [], "eval": [], "table": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(train_rows: list[dict]) -> None:
        report["train"], report["table"] = train_rows, table_rows(train_rows)
        args.out.write_text(json.dumps(report, indent=2))

    save([] if args.skip_train else run_training(args, device, save))
    report["eval"] = run_evaluation(args, device) if args.eval_shapes and args.eval_engines else []
    args.out.write_text(json.dumps(report, indent=2))
    for row in report["train"]:
        if row.get("profile_table"):
            print(f"\nprofile {row['shape']} {row['loop']} {row['method']} fast={row['fast_path']}: "
                  f"GPU busy {_fraction(row.get('gpu_busy_fraction'))}\n{row['profile_table']}")
    print(format_table(report))
    return report


if __name__ == "__main__":
    main()
