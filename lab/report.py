"""`python -m lab report perf.json [--out docs/performance.md]`: the performance page, regenerated
from `lab.shapes`'s JSON (never edit its numbers by hand: rerun the benchmark and this script)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab import sweep_throughput
from lab.loss_curves import quarter_table
from lab.table import format_table

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
        tree = env.get("worktree_tree_sha")
        return (f"{sha[:12]} plus uncommitted changes" + (f"; the files that ran are git tree {tree[:12]} (a commit's "
                f"tree, `git log --format='%h %T'`, when no untracked file rode along; else rebuild it from the "
                f"commit, docs/performance-analysis.md)" if tree else ""))
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
    """Several `lab.shapes` runs (e.g. one per shape, within a device call's time limit) as one page."""
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

Generated by `python -m lab report` from the JSON that `python -m lab shapes` wrote; do not
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


# -- the reference workload (lab/real_workload.py's JSON) ------------------------------------

def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _ok(part: dict | None, key: str):
    """`part[key]` of a measured (status ok) row, else None."""
    return part.get(key) if part and part.get("status") == "ok" else None


def real_workload_ratios(report: dict) -> dict:
    """The comparisons the targets speak of, computed from the rows (None where a row is missing)."""
    train, ev = report.get("train", {}), report.get("eval") or {}
    tok = {name: _ok(row, "tokens_per_s") for name, row in train.items()}
    step = {name: _ok(row, "median_step_s") for name, row in train.items()}
    hf, static = ev.get("hf") or {}, ev.get("static") or {}
    same = static.get("identical_fp32") if ev.get("status") == "ok" else None
    return {"fast_over_plain_eager_tokens": _ratio(tok.get("harness_fast"), tok.get("plain_eager")),
            "fast_over_hf_trainer_tokens": _ratio(tok.get("harness_fast"), tok.get("hf_trainer")),
            "default_over_plain_step_padded": _ratio(step.get("harness_default"), step.get("plain_eager")),
            "length_grouped_over_plain_step": _ratio(step.get("harness_length_grouped"), step.get("plain_length_grouped")),
            "same_batches_as_fast_over_plain_step": _ratio(step.get("harness_same_batches_as_fast"),
                                                           step.get("plain_same_batches_as_fast")),
            # The same pairs over all their timed steps: summed time (the tokens are the same), so
            # every window counts, not only the middle one (a 10-step window shares one time).
            "default_over_plain_time_padded": _ratio(tok.get("plain_eager"), tok.get("harness_default")),
            "length_grouped_over_plain_time": _ratio(tok.get("plain_length_grouped"), tok.get("harness_length_grouped")),
            "same_batches_as_fast_over_plain_time": _ratio(tok.get("plain_same_batches_as_fast"),
                                                           tok.get("harness_same_batches_as_fast")),
            "fast_eager_over_plain_step_fast_batches": _ratio(step.get("harness_fast_eager"),
                                                              step.get("plain_same_batches_as_fast")),
            "fast_over_plain_step_fast_batches": _ratio(step.get("harness_fast"), step.get("plain_same_batches_as_fast")),
            "accuracy_default": _ok(train.get("harness_default"), "accuracy"),
            "ci95_default": _ok(train.get("harness_default"), "ci95"),
            "accuracy_fast": _ok(train.get("harness_fast"), "accuracy"),
            "fast_epoch_s": _ok(train.get("harness_fast"), "epoch_s"),
            "cold_epochs_s": sorted((report.get("cold_start") or {}).get("epoch_s") or []),
            "fast_eager_over_plain_eager_tokens": _ratio(tok.get("harness_fast_eager"), tok.get("plain_eager")),
            "fast_eager_epoch_s": _ok(train.get("harness_fast_eager"), "epoch_s"),
            "accuracy_fast_eager": _ok(train.get("harness_fast_eager"), "accuracy"),
            "eval_static_speedup": _ratio(hf.get("seconds"), static.get("seconds")) if ev.get("status") == "ok" else None,
            "eval_identical_fp32": _ratio(*same) if same else None}


def _inside(value, interval) -> str:
    if value is None or not interval:
        return "n/a"
    return "inside" if interval[0] <= value <= interval[1] else "outside"


def _f(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def _spread(values: list[float]) -> str:
    """min / median / max of sorted `values`, in seconds."""
    if not values:
        return "n/a"
    return f"min {values[0]:.3g} s, median {values[len(values) // 2]:.3g} s, max {values[-1]:.3g} s"


def _cold_start_table(cold: dict) -> str:
    rows = []
    for i, row in enumerate(cold.get("processes", [])):
        steps = _ok(row, "first_steps") or {}
        rows.append([i + 1, row.get("status"), _f(_ok(row, "build_s"), ".1f"), _f(_ok(row, "epoch_s"), ".2f"),
                     _f(_ok(row, "first_steps_s"), ".2f"), _f(steps.get("compile_s", {}).get("_compile.compile_inner"), ".2f"),
                     _f(steps.get("decoder_graph_capture_s"), ".2f")])
    return _md_table(["process", "status", "build s", "epoch s", "first steps s", "forward compile s", "graph capture s"],
                     rows)


def real_workload_summary(report: dict) -> str:
    r = real_workload_ratios(report)
    return "\n".join([
        f"reference workload ({report.get('workload', {}).get('model')}, {report.get('device')}):",
        f"  harness_fast / plain_eager real tokens/s: x{_f(r['fast_over_plain_eager_tokens'])} (target >= 10)",
        f"  harness_fast / hf_trainer real tokens/s:  x{_f(r['fast_over_hf_trainer_tokens'])} (target >= 3)",
        f"  harness_fast epoch: {_f(r['fast_epoch_s'])} s (target <= 12)",
        *([f"  harness_fast epoch in {len(report['cold_start']['processes'])} new processes, empty compile caches "
           f"each: {_spread(r['cold_epochs_s'])} (target <= 12)"] if report.get("cold_start") else []),
        f"  harness_fast_eager (the fast settings, no compile): x{_f(r['fast_eager_over_plain_eager_tokens'])} "
        f"plain_eager's real tokens/s, epoch {_f(r['fast_eager_epoch_s'])} s, accuracy {_f(r['accuracy_fast_eager'], '.2%')} "
        f"({_inside(r['accuracy_fast_eager'], r['ci95_default'])} harness_default's 95% CI)",
        f"  step, harness/plain, padded batches: x{_f(r['default_over_plain_step_padded'])} (target <= 1.05; "
        f"summed over the timed steps x{_f(r['default_over_plain_time_padded'])})",
        f"  step, harness/plain, length-grouped batches: x{_f(r['length_grouped_over_plain_step'])} (target <= 1.05; "
        f"summed over the timed steps x{_f(r['length_grouped_over_plain_time'])})",
        f"  step, harness/plain, the fast path's packed batches, both eager with HF's loss: "
        f"x{_f(r['same_batches_as_fast_over_plain_step'])} (target <= 1.05; summed over the timed steps "
        f"x{_f(r['same_batches_as_fast_over_plain_time'])})",
        f"  step, harness fast settings without compile (chunked loss)/plain (HF's loss), the fast batches: "
        f"x{_f(r['fast_eager_over_plain_step_fast_batches'])}",
        f"  step, harness_fast (compiled, CUDA graphs on a GPU)/plain (eager), the fast batches: x{_f(r['fast_over_plain_step_fast_batches'])}",
        f"  accuracy, harness_fast {_f(r['accuracy_fast'], '.2%')} against harness_default "
        f"{_f(r['accuracy_default'], '.2%')}, 95% CI [{', '.join(_f(v, '.2%') for v in r['ci95_default'] or (None, None))}]"
        f" (target: inside; {_inside(r['accuracy_fast'], r['ci95_default'])})",
        f"  eval, static engine speed-up over HF generate: x{_f(r['eval_static_speedup'])} (target >= 10); "
        f"identical in fp32: {_f(r['eval_identical_fp32'], '.1%')} (target >= 99.5%)"])


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def _train_table(train: dict) -> str:
    rows = [[name, row.get("status"), _f(_ok(row, "tokens_per_s"), ",.0f"), _f(_ok(row, "median_step_s"), ".4f"),
             _f(_ok(row, "peak_gpu_gib"), ".2f"), _f(_ok(row, "first_step_s"), ".2f"), _f(_ok(row, "epoch_s"), ".1f"),
             _f(_ok(row, "padding_fraction"), ".1%"), _f(_ok(row, "accuracy"), ".2%"),
             "[{}, {}]".format(*(_f(v, ".2%") for v in row["ci95"])) if _ok(row, "ci95") else "",
             _f((row.get("profile") or {}).get("gpu_busy_fraction"), ".0%") if row.get("profile") else ""]
            for name, row in train.items()]
    table = _md_table(["row", "status", "real tokens/s", "median step s", "peak GiB", "first step s", "epoch s",
                       "padding", "accuracy", "95% CI", "GPU busy (profile)"], rows)
    details = [f"- `{name}`: `slmbench {' '.join(row.get('overrides', []))}`"
               + "".join(f"; {key}: `{json.dumps(row[key])}`" for key in ("settings", "notes", "error") if row.get(key))
               for name, row in train.items()]
    return "\n".join([table, "", *details])


def _eval_lines(ev: dict) -> str:
    if ev.get("status") != "ok":
        return f"Evaluation: {ev.get('status')} {ev.get('error', '')}"
    hf, st = ev["hf"], ev["static"]
    bf16 = st.get("identical_bf16")
    return "\n".join([
        f"Evaluation, {ev['model_weights']}; {ev['prompts']} prompts, {ev['max_new_tokens']} new tokens at most, "
        f"{ev['precision']}:", "",
        _md_table(["engine", "seconds", "batch", "accuracy", "identical to HF, fp32", "identical to HF, bf16"],
                  [["HF generate", _f(hf["seconds"], ".1f"), hf["batch_size"], _f(hf["accuracy"], ".2%"), "", ""],
                   [f"static (refill {st['refill']}, CUDA graphs {st['cuda_graphs']})", _f(st["seconds"], ".1f"),
                    st["batch_size"], _f(st["accuracy"], ".2%"), "{}/{}".format(*st["identical_fp32"]),
                    "{}/{}".format(*bf16) if bf16 else "n/a"]]), "", *(f"- {note}" for note in ev.get("notes", [])),
        *([f"- profile of the static engine on {ev['profile']['prompts']} prompts (`eval.profile` in the JSON): "
           f"GPU busy {_f(ev['profile']['gpu_busy_fraction'], '.0%')} of {_f(ev['profile']['profiled_wall_s'], '.1f')} s"]
          if ev.get("profile") else [])])


def _methods_table(rows: list[dict]) -> str:
    body = [[r["method"], r.get("status"), _f(r.get("settings", {}).get("lr")), _f(_ok(r, "accuracy"), ".2%"),
             "[{}, {}]".format(*(_f(v, ".2%") for v in r["ci95"])) if _ok(r, "ci95") else "n/a",
             _f(_ok(r, "peak_gpu_memory_gib"), ".2f"), _f(_ok(r, "train_s"), ".1f"), _f(_ok(r, "tokens_per_s"), ",.0f"),
             _f(_ok(r, "eval_s"), ".1f")] for r in rows]
    return _md_table(["method", "status", "train.lr", "accuracy", "95% CI", "peak GiB", "train s", "real tokens/s", "eval s"], body)


def _paper_table(rows: list[dict]) -> str:
    body = [[r["shape"], r["method"], r.get("status"), _f(_ok(r, "peak_gpu_gib"), ".2f"),
             _f(_ok(r, "median_step_s"), ".3f"), _f(r.get("memory_ratio_vs_full"), ".3f"),
             _f(r.get("time_ratio_vs_full"), ".3f")] for r in rows]
    return _md_table(["shape", "method", "status", "peak GiB", "median step s", "memory / full", "time / full"], body)


def render_real_workload(report: dict) -> str:
    """The page's section for the reference workload, from `python -m lab real_workload`'s JSON."""
    work = report.get("workload", {})
    calls = [(part, run) for part, runs in report.get("parts_run", {}).items()
             for run in ([runs] if isinstance(runs, dict) else runs)]  # one dict per part in older files
    runs = "\n".join(f"- {part}: `{run['command']}` ({run['date']}, {run['device']}, code "
                     f"{_code(run['commit'])})" for part, run in calls)
    sections = [f"## The reference workload: {work.get('model')} on {work.get('task')}", "",
                "Generated by `python -m lab report --real-workload FILE` from the JSON that "
                "`python -m lab real_workload` wrote; do not edit the numbers by hand.", "", runs, "",
                "Workload: " + ", ".join(f"{k} {_f(v) if isinstance(v, float) else v}" for k, v in work.items()
                                         if not isinstance(v, dict)), "",
                "Training (tokens/s counts real, non-padding tokens; step figures over the same window of "
                "steps after warm-up; epoch s: the harness run's whole epoch, first step included):", "",
                _train_table(report.get("train", {})), ""]
    sections += ["Comparisons (targets in parentheses):", "", "```", real_workload_summary(report), "```"]
    if quarter_table(report):
        sections += ["", "The loss, default against fast, by the real tokens each had trained on "
                     "(`python -m lab loss_curves FILE`; the same examples, the fast path in fewer, larger steps):",
                     "", "![loss curves](perf/loss_curves.png)", "", quarter_table(report)]
    if report.get("eval"):
        sections += ["", _eval_lines(report["eval"])]
    if report.get("methods"):
        first = report["methods"][0]
        settings = {k: v for k, v in (first.get("settings") or {}).items() if k != "lr"}
        sections += ["", f"Every method, one epoch, then the test set (settings: `{json.dumps(settings)}`; "
                     f"{'; '.join(first.get('notes') or []) or 'nothing left out'}):", "", _methods_table(report["methods"])]
    if report.get("cold_start"):
        sections += ["", "`harness_fast`'s epoch in new processes, one after the other, each with empty Inductor "
                     "and Triton caches of its own (cold_start; first steps: the warm-up window; forward compile: "
                     "`_compile.compile_inner`):", "", _cold_start_table(report["cold_start"])]
    if report.get("paper_config"):
        sections += ["", "The AdaGradSelect paper config's training settings (`+experiment=adagradselect_paper`), "
                     "random weights of the real shapes:", "", _paper_table(report["paper_config"])]
    return "\n".join(sections) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("json", type=Path, nargs="*", help="the files `python -m lab shapes --out` wrote")
    parser.add_argument("--real-workload", type=Path, default=None, metavar="FILE",
                        help="the file `python -m lab real_workload` wrote: its section ends the page")
    parser.add_argument("--sweep-throughput", type=Path, default=None, metavar="FILE",
                        help="the file `python -m lab sweep_throughput` wrote: its section follows")
    parser.add_argument("--out", type=Path, default=Path("docs/performance.md"))


def main(args: argparse.Namespace, command: str) -> None:
    if not args.json and args.real_workload is None and args.sweep_throughput is None:
        raise SystemExit("python -m lab report: give the lab's JSON files, --real-workload FILE, "
                         "--sweep-throughput FILE, or several")
    page = render(merge([json.loads(path.read_text()) for path in args.json])) if args.json else ""
    if args.real_workload is not None:
        page += ("\n" if page else "") + render_real_workload(json.loads(args.real_workload.read_text()))
    if args.sweep_throughput is not None:
        page += ("\n" if page else "") + sweep_throughput.markdown(json.loads(args.sweep_throughput.read_text()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")

