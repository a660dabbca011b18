"""`python -m bench.perf.report perf.json [--out docs/performance.md]`: the performance page, regenerated
from `bench.perf.lab`'s JSON (never edit its numbers by hand: rerun the benchmark and this script)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.perf.table import format_table

TARGETS = """## Targets (the performance targets set for the lab; figures, not tests)

- Harness overhead: `harness/plain step` and `harness/plain mem` at most 1.05 for full, lora and
  static25 on every shape.
- Block methods at their default knobs (topk, adagradselect): `step/full` at most 0.88 and
  `mem/full` at most 0.65; IST: less memory than lora.
- Fast path (`train.fast_path`, `train.compile`): full fine-tuning on llama3.2-1b with
  `tok/s vs plain` at least 1.3 and peak memory at most 0.8 of the plain loop's.
- Evaluation: all 1,319 GSM8K test prompts, 256 new tokens, on the qwen2.5-0.5b shape in at most
  15 s wall clock, everything included."""


def _code(env: dict) -> str:
    sha = env.get("git_sha")
    if not sha:
        return "not a git checkout (a copy of the tree)"
    if env.get("dirty") is False:
        return sha[:12]
    if env.get("dirty"):
        return f"{sha[:12]} plus uncommitted changes"
    return (f"recorded as {sha}, unverified (no `dirty` flag in this JSON: a device copy's .git can be older "
            f"than its files; docs/performance-analysis.md lists the commit each run came from)")


def _known(row: dict, *keys: str) -> bool:
    """CPU rows carry no GPU memory: such a row has no verdict rather than a made-up one."""
    return all(row.get(k) is not None for k in keys)


def _setting(row: dict) -> str:
    """How the row trained, where it differs from the plain default (no fast path, no checkpointing)."""
    parts = [row["fast_path"]] if row.get("fast_path", "none") != "none" else []
    parts += ["compiled"] if row.get("compile") else []
    parts += ["gradient checkpointing"] if row.get("gradient_checkpointing") else []
    return f" ({', '.join(parts)})" if parts else ""


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def measured_targets(report: dict) -> str:
    """Every run's figure against its target, computed from the rows (each run, not the best one)."""
    lines = ["## Targets, as measured (computed from every row above)", ""]
    for part in report["parts"]:
        rows = [r for r in part["table"] if r.get("status") == "ok"]
        plain_rows = [r for r in rows if r.get("fast_path", "none") == "none" and not r.get("compile")]
        for r in plain_rows:
            if r["method"] in ("full", "lora", "static25") and _known(r, "step_harness_over_plain", "mem_harness_over_plain"):
                ok = r["step_harness_over_plain"] <= 1.05 and r["mem_harness_over_plain"] <= 1.05
                lines.append(f"- harness overhead, {r['shape']} {r['method']}{_setting(r)}: step "
                             f"x{r['step_harness_over_plain']:.3f}, memory x{r['mem_harness_over_plain']:.3f} "
                             f"of the plain loop: {_verdict(ok)}")
        for r in rows:
            if r["method"] in ("topk", "adagradselect") and _known(r, "step_over_full", "mem_over_full"):
                ok = r["step_over_full"] <= 0.88 and r["mem_over_full"] <= 0.65
                lines.append(f"- {r['method']}, {r['shape']}{_setting(r)}: step x{r['step_over_full']:.3f}, memory "
                             f"x{r['mem_over_full']:.3f} of full fine-tuning (same setting): {_verdict(ok)}")
        lora = {r["shape"]: r for r in plain_rows if r["method"] == "lora"}
        for r in plain_rows:
            if r["method"] == "ist" and r["shape"] in lora and _known(r, "harness_peak_gib") and _known(lora[r["shape"]], "harness_peak_gib"):
                ok = r["harness_peak_gib"] < lora[r["shape"]]["harness_peak_gib"]
                lines.append(f"- ist, {r['shape']}: {r['harness_peak_gib']:.2f} GiB against LoRA-256's "
                             f"{lora[r['shape']]['harness_peak_gib']:.2f} GiB: {_verdict(ok)}")
        for r in rows:
            if (r.get("fast_path", "none") != "none" and r["shape"] == "llama3.2-1b" and r["method"] == "full"
                    and _known(r, "tokens_per_s_over_plain", "mem_harness_over_plain")):
                ok = r["tokens_per_s_over_plain"] >= 1.3 and r["mem_harness_over_plain"] <= 0.8
                figures = (f"tokens/s x{r['tokens_per_s_over_plain']:.3f}, memory x{r['mem_harness_over_plain']:.3f} "
                           f"of the plain loop")
                if r.get("compile"):  # the fast path: chunked loss and compiled layers together
                    lines.append(f"- fast path ({r['fast_path']} + compile), llama3.2-1b full: {figures}: {_verdict(ok)}")
                else:
                    lines.append(f"- ({r['fast_path']} alone, without compile, for reference), llama3.2-1b full: {figures}")
        for e in part.get("eval", []):
            if e.get("status") == "ok" and e.get("prompts") == 1319 and e.get("max_new_tokens") == 256 and _known(e, "wall_s"):
                if e["engine"] == "hf":  # the baseline the target is set against, not a candidate
                    lines.append(f"- evaluation reference, {e['shape']} (HF generate, batch {e['batch_size']}): "
                                 f"1,319 prompts in {e['wall_s']:.2f} s")
                else:
                    lines.append(f"- evaluation, {e['shape']} ({e['engine']}, batch {e['batch_size']}): 1,319 prompts in "
                                 f"{e['wall_s']:.2f} s: {_verdict(e['wall_s'] <= 15)}")
    return "\n".join(lines)


def merge(reports: list[dict]) -> dict:
    """Several `bench.perf.lab` runs (e.g. one per shape, within a device call's time limit) as one page."""
    merged = {"date": reports[0]["date"], "env": reports[0]["env"], "train": [], "eval": [], "table": [],
              "commands": [], "knobs": [], "parts": reports}
    for report in reports:
        for key in ("train", "eval", "table"):
            merged[key] += report[key]
        merged["commands"].append(report["command"])
        merged["knobs"].append(report["knobs"])
    return merged


def render(report: dict) -> str:
    env = report["env"]
    sections = "\n\n".join(f"### `{part['command']}`\n\n{part['date']}, {part['env'].get('device_name')}\n\n"
                             f"{format_table(part)}" for part in report["parts"])
    commands = "\n".join(f"- `{c}`" for c in report["commands"])
    knob_lines = "\n\n".join(f"`{c}`:\n\n" + "\n".join(f"- `{k}`: `{v}`" for k, v in sorted(knobs.items()))
                             for c, knobs in zip(report["commands"], report["knobs"]))
    return f"""# Performance

Generated by `python -m bench.perf.report` from the JSON that `python -m bench.perf.lab` wrote; do not
edit the numbers by hand.

- Device: {env.get('device_name')} (torch {env.get('torch')}, CUDA {env.get('cuda')}, transformers
  {env.get('transformers')}, peft {env.get('peft')}, Python {env.get('python')})
- Dates: under each section; code: {_code(env)}
- Commands (one process each; all figures of a table come from that one process):

{commands}

What is measured: random-init models of the real shapes (`../shared/data/models/*/config.json`),
the real tokenizer, GSM8K train rows in the harness's format (prompt masked) packed into fixed
(batch, sequence) windows. `plain` is a hand-written PyTorch loop (fp32 weights, bf16 autocast,
fused AdamW, sdpa, HF's loss); `harness` is `bench.train.train` driving the method object.
`static25` trains a fixed, seeded 25% of the decoder blocks in both loops (everything else frozen,
no optimizer state for it). Step time is the median after warm-up, with a device sync around each
step; tokens/s counts every position of the batch; peak is the maximum allocated GPU memory of the
run (weights, gradients and optimizer state included). `step/full` and `mem/full` compare with
full fine-tuning in the same loop and on the same loss path (`fast`: `none` = HF's loss,
`chunked_ce` = `train.fast_path=chunked_ce`, `+compile` = `train.compile=true`). With `--repeats`,
plain and harness rows alternate and each configuration's fastest run is shown. Why each target
is met or missed, with the profiles and memory snapshots behind it: `docs/performance-analysis.md`
and `docs/performance-memory.md`.

{sections}

{TARGETS}

{measured_targets(report)}

## Knobs

{knob_lines}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.report", description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path, nargs="+", help="the files `python -m bench.perf.lab --out` wrote")
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))
    args = parser.parse_args(argv)
    report = merge([json.loads(path.read_text()) for path in args.json])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
