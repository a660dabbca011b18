"""`python -m lab memory`: where a training step's peak GPU memory goes.

For each model and setting, a few steps of the run itself (the run object of bench/run/recipe.py,
as `slmbench` builds it; a memory observer attached to its loop), and at the last step, in GiB:
- `weights`: the fp32 parameters alone;
- `step start`: allocated when the step begins (weights + optimizer state; gradients are None);
- `forward keeps`: allocated when the decoder's forward ends (its final norm) minus `step start`,
  i.e. what the forward holds for backward (activations, autocast's bf16 weight copies); the loss
  head's logits or chunked head gradient come after it and show in the peak;
- `peak`: the step's maximum allocated, and `peak - step start`, the transient part;
- `max peak, all steps`: over every step (a selection step of topk holds more than the others).
A setting is `METHOD[:FAST_PATH][+compile][+gc]`, e.g. `full`, `full:chunked_ce+compile`,
`static25+gc`, `topk:chunked_ce+gc`. Figures are measurements (no target is asserted).

    python -m lab memory --data-dir ../shared/data --models llama3.2-1b --settings full full:chunked_ce static25 --out mem.json
    python -m lab memory --render mem.json [more.json ...] --md docs/performance-memory.md
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch

from bench.loss import FAST_PATHS
from bench.models.loading import causal_lm
from bench.run.recipe import Run
from lab.loops import release
from lab.shapes import build_method, row_config
from bench.runtime import synchronize

GIB = 1024 ** 3


def parse_setting(text: str) -> dict:
    head, *flags = text.split("+")
    method, _, fast_path = head.partition(":")
    fast_path = fast_path or "none"
    unknown = [f for f in flags if f not in ("compile", "gc")]
    if fast_path not in FAST_PATHS or unknown:
        raise ValueError(f"--settings {text!r}: METHOD[:FAST_PATH][+compile][+gc], FAST_PATH one of "
                         f"{', '.join(FAST_PATHS)}")
    return {"setting": text, "method": method, "fast_path": fast_path, "compile": "compile" in flags,
            "gradient_checkpointing": "gc" in flags}


class StepMemory:
    """A loop observer (CUDA): allocated memory at each step's start, when the decoder's forward
    ends (a forward hook on its final norm), and the step's peak; all relative to `base`."""

    def __init__(self, model, device: torch.device, base: float, snapshot_step: int | None):
        self.device, self.base, self.snapshot_step, self.steps = device, base, snapshot_step, []
        self.hook = causal_lm(model).model.norm.register_forward_hook(self._forward_end)

    def _allocated(self) -> float:
        return torch.cuda.memory_allocated(self.device) / GIB - self.base

    def _forward_end(self, module, inputs, output) -> None:
        if self.forward_end is None:  # the first micro-batch's forward
            synchronize(self.device)
            self.forward_end = self._allocated()

    def step_start(self, step: int) -> None:
        if step == self.snapshot_step:
            torch.cuda.memory._record_memory_history(context="alloc", stacks="python", clear_history=True)
        synchronize(self.device)
        self.start, self.forward_end = self._allocated(), None
        torch.cuda.reset_peak_memory_stats(self.device)

    def step_end(self, step: int, metrics: dict) -> None:
        peak = torch.cuda.max_memory_allocated(self.device) / GIB - self.base
        self.steps.append({"start": self.start, "forward_end": self.forward_end, "peak": peak, "loss": metrics["loss"]})


def memory_row(args, model_name: str, setting: dict, device: torch.device) -> dict:
    release(device)
    base = torch.cuda.memory_allocated(device) / GIB  # everything relative to before this row's model
    args.set = [f"train.gradient_checkpointing={str(setting['gradient_checkpointing']).lower()}"]
    args.fast_path = setting["fast_path"]
    cfg, overrides = row_config(args, model_name, setting["method"], fast=True, compiled=setting["compile"])
    run = Run.build(cfg, method=build_method(setting["method"], args))
    weights = sum(p.numel() * p.element_size() for p in run.model.parameters()) / GIB
    observer = StepMemory(run.model, device, base, args.steps - 1 if args.snapshot else None)
    run.train(until=args.steps, observers=[observer])
    sites = None
    if args.snapshot:
        sites = peak_sites(torch.cuda.memory._snapshot(), device)
        torch.cuda.memory._record_memory_history(enabled=None)
    observer.hook.remove()
    last = observer.steps[-1]
    result = {"peak_sites": sites, "max_peak_gib": max(s["peak"] for s in observer.steps), "weights_gib": weights,
              "step_start_gib": last["start"], "forward_keeps_gib": last["forward_end"] - last["start"],
              "peak_gib": last["peak"], "transient_gib": last["peak"] - last["start"], "final_loss": last["loss"],
              "overrides": overrides}
    del run, observer
    release(device)
    result["left_allocated_gib"] = torch.cuda.memory_allocated(device) / GIB - base  # ~0 unless a leak
    return result


def _site(frames: list[dict]) -> str:
    """Where an allocation was made: the innermost frame outside torch itself (the model's code,
    ours), or the autograd engine when no Python frame is inside the forward (a backward kernel)."""
    for frame in frames:
        name = frame["filename"]
        if "/torch/" not in name or "/torch/_inductor" in name:
            short = "/".join(name.split("/")[-2:])
            return f"{short}:{frame['line']} {frame['name']}"
    return "autograd engine / optimizer (no Python frame)"


def peak_sites(snapshot: dict, device: torch.device, top: int = 12) -> dict:
    """Replays the recorded allocations of one step: the moment of the peak, and the allocations
    made during the step and still alive then, summed per allocating site (GiB)."""
    events = snapshot["device_traces"][device.index or 0]
    live: dict[int, tuple[int, str]] = {}
    current = peak = 0
    peak_live: dict[int, tuple[int, str]] = {}
    peak_at = 0
    for i, event in enumerate(events):
        if event["action"] == "alloc":
            live[event["addr"]] = (event["size"], _site(event.get("frames", [])))
            current += event["size"]
        elif event["action"] == "free_completed" and event["addr"] in live:
            current -= live.pop(event["addr"])[0]
        if current > peak:
            peak, peak_live, peak_at = current, dict(live), i
    by_site: dict[str, int] = {}
    for size, site in peak_live.values():
        by_site[site] = by_site.get(site, 0) + size
    ranked = sorted(by_site.items(), key=lambda kv: -kv[1])[:top]
    return {"above_step_start_gib": peak / GIB, "event": peak_at, "events": len(events),
            "sites": [[site, size / GIB] for site, size in ranked]}


def run(args, device: torch.device) -> list[dict]:
    rows = []
    for model_name in args.models:
        for text in args.settings:
            setting = parse_setting(text)
            row = {"shape": model_name, "batch_size": args.batch_size, **setting}
            try:
                row.update(memory_row(args, model_name, setting, device), status="ok")
            except torch.OutOfMemoryError as err:
                row.update(status="oom", error=str(err).splitlines()[0])
            release(device)
            if setting["compile"]:
                torch._dynamo.reset()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


COLUMNS = [("shape", "shape"), ("batch", "batch_size"), ("setting", "setting"), ("status", "status"),
           ("weights", "weights_gib"), ("step start", "step_start_gib"), ("forward keeps", "forward_keeps_gib"),
           ("peak", "peak_gib"), ("peak - step start", "transient_gib"), ("max peak, all steps", "max_peak_gib"),
           ("left after the row", "left_allocated_gib")]


def markdown(reports: list[dict]) -> str:
    lines = ["# Where the peak memory goes", "",
             "Generated by `python -m lab memory --render FILE` from the JSON of the commands below; "
             "GiB of allocated GPU memory at the last measured step. Setting: METHOD[:loss path][+compile][+gc].", ""]
    for report in reports:
        lines += [f"## `{report['command']}`", "", f"{report['date']}, {report['device_name']}", "",
                  "| " + " | ".join(t for t, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in report["rows"]:
            cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "—")) for _, k in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for row in report["rows"]:
            if row.get("peak_sites"):
                sites = row["peak_sites"]
                lines += [f"What {row['shape']} `{row['setting']}` allocated during its last step and still held at "
                          f"the step's peak ({sites['above_step_start_gib']:.2f} GiB above step start; event "
                          f"{sites['event']} of {sites['events']}):", ""]
                lines += [f"- {gib:.2f} GiB: `{site}`" for site, gib in sites["sites"]] + [""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="as lab.shapes's --data-dir")
    p.add_argument("--models", nargs="+", default=["llama3.2-1b"])
    p.add_argument("--settings", nargs="+", default=["full", "full:chunked_ce", "static25"])
    p.add_argument("--steps", type=int, default=3, help="the first creates the optimizer state; the last is reported")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshot", action="store_true",
                   help="record the last step's allocations (torch.cuda.memory) and list what is alive at its peak")
    p.add_argument("--out", type=Path, default=Path("perf_memory.json"))
    p.add_argument("--render", type=Path, nargs="+", help="instead of measuring: JSON files to render as markdown")
    p.add_argument("--md", type=Path, default=Path("docs/performance-memory.md"))


def main(args: argparse.Namespace, command: str) -> None:
    if args.render:
        args.md.write_text(markdown([json.loads(path.read_text()) for path in args.render]))
        print(f"wrote {args.md}")
        return
    if not torch.cuda.is_available():
        raise SystemExit("python -m lab memory measures GPU memory: no CUDA device here")
    for text in args.settings:
        parse_setting(text)  # refuse a bad setting before any model is built
    device = torch.device("cuda")
    args.device, args.warmup, args.profile, args.block_fraction = "cuda", 0, 0, 0.25  # what row_config reads
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": command,
              "device_name": torch.cuda.get_device_name(device), "torch": torch.__version__}
    report["rows"] = run(args, device)
    args.out.write_text(json.dumps(report, indent=2))
    print(markdown([report]))

