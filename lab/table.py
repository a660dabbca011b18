"""The comparison table of `lab.shapes`: rows from its JSON, ratios, and a markdown rendering.

One table row per (shape, method, fast path): the harness figures beside the plain loop's for the
same method (harness/plain), and the method against full fine-tuning in the same loop (method/full).
"""
from __future__ import annotations


def _ratio(a, b):
    return a / b if a is not None and b else None


def _find(rows: list[dict], **match) -> dict | None:
    """The fastest ok row that matches (with `--repeats`, each configuration ran several times)."""
    found = [r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())]
    return min(found, key=lambda r: r["median_step_s"]) if found else None


def table_rows(train_rows: list[dict]) -> list[dict]:
    out = []
    keys = list(dict.fromkeys((r["shape"], r["method"], r["fast_path"], r["compile"]) for r in train_rows))
    for shape, method, fast_path, compiled in keys:
        harness = _find(train_rows, loop="harness", shape=shape, method=method, fast_path=fast_path, compile=compiled) \
            or next((r for r in train_rows if r["loop"] == "harness" and r["shape"] == shape and r["method"] == method
                     and r["fast_path"] == fast_path and r["compile"] == compiled), None)
        # The plain loop has no fast path: fast rows are compared with the plain loop's same method.
        plain = _find(train_rows, loop="plain", shape=shape, method=method)
        mine = harness if harness is not None else plain or next(
            r for r in train_rows if r["shape"] == shape and r["method"] == method)
        # method/full: against full fine-tuning with the same loss path and compilation
        full = _find(train_rows, loop=mine["loop"], shape=shape, method="full", fast_path=fast_path, compile=compiled)
        ok = mine.get("status") == "ok"
        h_ok = harness is not None and harness.get("status") == "ok"
        out.append({
            "shape": shape, "method": method, "fast_path": fast_path, "compile": compiled,
            "status": mine.get("status"), "loop": mine["loop"],
            "gradient_checkpointing": mine.get("gradient_checkpointing"),
            "harness_step_s": harness.get("median_step_s") if h_ok else None,
            "plain_step_s": plain.get("median_step_s") if plain else None,
            "step_harness_over_plain": _ratio(harness.get("median_step_s"), plain.get("median_step_s"))
            if h_ok and plain else None,
            "harness_peak_gib": harness.get("peak_allocated_gib") if h_ok else None,
            "plain_peak_gib": plain.get("peak_allocated_gib") if plain else None,
            "mem_harness_over_plain": _ratio(harness.get("peak_allocated_gib"), plain.get("peak_allocated_gib"))
            if h_ok and plain else None,
            "peak_reserved_gib": mine.get("peak_reserved_gib") if ok else None,
            "tokens_per_s": mine.get("tokens_per_s") if ok else None,
            "tokens_per_s_over_plain": _ratio(harness.get("tokens_per_s"), plain.get("tokens_per_s"))
            if h_ok and plain else None,
            "step_over_full": _ratio(mine.get("median_step_s"), full.get("median_step_s")) if ok and full else None,
            "mem_over_full": _ratio(mine.get("peak_allocated_gib"), full.get("peak_allocated_gib")) if ok and full else None,
            "trainable_params": mine.get("trainable_params") if ok else None,
            # From `--profile`: kernel time over wall time of the harness step (< 1: host-bound).
            "gpu_busy_fraction": harness.get("gpu_busy_fraction") if h_ok else None,
        })
    return out


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


TRAIN_COLUMNS = [
    ("shape", "shape"), ("method", "method"), ("fast", None), ("status", "status"),
    ("harness step s", "harness_step_s"), ("plain step s", "plain_step_s"), ("harness/plain step", "step_harness_over_plain"),
    ("harness peak GiB", "harness_peak_gib"), ("plain peak GiB", "plain_peak_gib"),
    ("harness/plain mem", "mem_harness_over_plain"), ("reserved GiB", "peak_reserved_gib"), ("tokens/s", "tokens_per_s"),
    ("tok/s vs plain", "tokens_per_s_over_plain"), ("step/full", "step_over_full"), ("mem/full", "mem_over_full"),
    ("trainable params", "trainable_params"), ("GPU busy (profiled)", "gpu_busy_fraction"),
]
EVAL_COLUMNS = [("shape", "shape"), ("engine", "method"), ("status", "status"), ("prompts", "prompts"),
                ("batch", "batch_size"), ("new tokens", "max_new_tokens"), ("CUDA graphs", "cuda_graphs"),
                ("wall s", "wall_s"), ("prompts/s", "prompts_per_s"), ("gen tokens/s", "generated_tokens_per_s"),
                ("mean prompt tokens", "mean_prompt_tokens"), ("peak GiB", "peak_allocated_gib"),
                ("identical to other engine", "identical_to_other_engine")]


def _markdown(columns, rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for title, key in columns:
            if key is None:  # the fast-path cell
                cells.append("none" if row["fast_path"] == "none" else row["fast_path"] + ("+compile" if row["compile"] else ""))
            else:
                cells.append(_fmt(row.get(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_table(report: dict) -> str:
    lines = []
    if report.get("table"):
        lines += ["Training (median step after warm-up; peak = max allocated GPU memory)", ""]
        lines += _markdown(TRAIN_COLUMNS, report["table"])
    if report.get("eval"):
        lines += ["", "Evaluation throughput (greedy, fixed max_new_tokens, wall clock end to end)", ""]
        lines += _markdown(EVAL_COLUMNS, report["eval"])
    return "\n".join(lines)
