"""Selection traces of the block methods: which blocks trained at each step (metrics.jsonl's
`active_block_ids`, one row per optimizer step), drawn as a block x step heatmap per run over all
its epochs, with the selection entropy over time; and AdaGradSelect's selection summary.

A block method is whatever the records say is one: a method some of whose runs' metrics rows
carry `active_block_ids` (no hand-written list). A run of such a method without a trace (e.g. one
that died before its first step) is named, not drawn.

Selection entropy at step t (our choice of summary): the Shannon entropy, in bits, of how the
selections of the last `WINDOW` steps spread over the blocks, p_b = (steps in the window that
trained block b) / (block selections in the window). A method that keeps training the same k
blocks sits at log2(k); one that spreads its k picks evenly over all n blocks reaches log2(n).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.records.schema import METRICS_FILE, RESULT_FILE
from bench.tasks.sources import read_jsonl

TRACE_KEY = "active_block_ids"
NORMS_KEY = "block_grad_norms"  # AdaGradSelect's explore steps: one gradient norm per block
WINDOW = 10  # steps; our choice: topk's default re-selection period (conf/method/topk.yaml)
LINESTYLES = ("-", "--", "-.", ":")  # lines that coincide (e.g. two runs at 0 bits) stay told apart


def read_rows(run_dir: str | Path) -> list[dict] | None:
    """The run's metrics.jsonl rows in step order (a step logged twice, as after a resume, keeps its
    last line); None when there is no file."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    by_step = {int(row.data["step"]): row.data for row in read_jsonl(path)}
    return [by_step[step] for step in sorted(by_step)]


def trace_of(rows: list[dict]) -> dict[int, list[int]] | None:
    """{step: active block ids} of the rows that carry the trace; None when none does."""
    trace = {int(row["step"]): [int(b) for b in row[TRACE_KEY]] for row in rows if row.get(TRACE_KEY) is not None}
    return trace or None


def read_trace(run_dir: str | Path) -> dict[int, list[int]] | None:
    """{step: active block ids} from the run's metrics.jsonl; None when no line carries the trace
    or there is no file."""
    rows = read_rows(run_dir)
    return trace_of(rows) if rows is not None else None


def adagradselect_summary(metrics_rows: list[dict], steps_per_epoch: int, k: int) -> dict:
    """How an AdaGradSelect run selected, from its metrics rows (one per optimizer step, `step`
    counting from 1): `distinct_blocks_epoch1`, the blocks trained at least once in the first
    `steps_per_epoch` steps; `final_overlap_with_grad_topk`, the share of the last step's blocks
    among the k blocks with the largest mean `block_grad_norms` over the explore steps (ties to the
    shallower block; None when no row has norms)."""
    if steps_per_epoch < 1 or k < 1:
        raise ValueError(f"steps_per_epoch and k must be >= 1, got {steps_per_epoch} and {k}")
    rows = sorted((r for r in metrics_rows if r.get(TRACE_KEY) is not None), key=lambda r: int(r["step"]))
    epoch1 = {int(b) for r in rows if int(r["step"]) <= steps_per_epoch for b in r[TRACE_KEY]}
    norms = [r[NORMS_KEY] for r in rows if r.get(NORMS_KEY) is not None]
    overlap = None
    if norms and rows:
        top = np.argsort(-np.mean(np.asarray(norms, dtype=float), axis=0), kind="stable")[:k]
        overlap = len(set(top.tolist()) & {int(b) for b in rows[-1][TRACE_KEY]}) / k
    return {"k": k, "distinct_blocks_epoch1": len(epoch1), "final_overlap_with_grad_topk": overlap}


def selection_summary(rows: list[dict], steps_per_epoch: int | None) -> dict | None:
    """`adagradselect_summary` of one run's metrics rows, k being the most blocks one step trained;
    None without the epoch's length or a trace."""
    k = max((len(r.get(TRACE_KEY) or []) for r in rows), default=0)
    return adagradselect_summary(rows, steps_per_epoch, k) if steps_per_epoch and k else None


def selection_matrix(trace: dict[int, list[int]], n_blocks: int | None = None) -> tuple[np.ndarray, list[int]]:
    """(blocks x steps 0/1 matrix, the steps) from a trace; n_blocks at least max id + 1."""
    steps = list(trace)
    n = max([n_blocks or 0, *(max(ids) + 1 for ids in trace.values() if ids)])
    matrix = np.zeros((n, len(steps)), dtype=np.int8)
    for column, step in enumerate(steps):
        matrix[trace[step], column] = 1
    return matrix, steps


def selection_entropy(matrix: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Per step, the entropy (bits) of the block selections in the trailing `window` steps."""
    out = np.zeros(matrix.shape[1])
    for t in range(matrix.shape[1]):
        counts = matrix[:, max(0, t - window + 1): t + 1].sum(axis=1).astype(float)
        total = counts.sum()
        p = counts[counts > 0] / total if total else np.array([])
        out[t] = float(-(p * np.log2(p)).sum()) if len(p) else math.nan
    return out


def _n_blocks(row: pd.Series) -> int | None:
    value = row.get("cfg/model.dims.num_hidden_layers")
    return int(value) if value is not None and not pd.isna(value) else None


def recorded_steps_per_epoch(run_dir: str | Path) -> int | None:
    """The run's optimizer steps per epoch, as its result.json records it (None in older records)."""
    path = Path(run_dir) / RESULT_FILE
    try:
        value = json.loads(path.read_text()).get("steps_per_epoch")
    except (OSError, ValueError):
        return None
    return int(value) if value else None


def _label(row: pd.Series) -> str:
    return f"{row['method']} on {row['model']}, seed {row['seed']}"


def _entropy_axes(ax, window: int) -> None:
    ax.set_ylabel("bits")
    ax.grid(alpha=0.3)
    ax.set_xlabel("optimizer step")


def plot_selection(matrix: np.ndarray, steps: list[int], title: str, path: Path, window: int = WINDOW,
                   steps_per_epoch: int | None = None, explore_steps: list[int] = ()) -> Path:
    """Heatmap (block x step: dark = trained that step) over every epoch, epoch boundaries marked
    (when `steps_per_epoch` is known) and explore steps ticked, over the entropy of the selections."""
    k = int(matrix.sum(axis=0).max())
    distinct = int((matrix.sum(axis=1) > 0).sum())
    fig = Figure(figsize=(max(6.5, min(16, 0.05 * len(steps) + 4)), 5.6), layout="constrained")
    heat, line = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, matrix.shape[0] - 0.5)
    heat.imshow(matrix, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                extent=extent)
    n = matrix.shape[0]
    heat.set_yticks(range(0, n, max(1, math.ceil(n / 12))))  # a row is one block: ticks on its centre
    heat.set_ylim(-0.5, n + 1.0)  # a strip above the blocks for the epoch labels and explore ticks
    heat.set_ylabel("block (layers first, by depth)")
    key = [Patch(facecolor="black", edgecolor="grey", label="trained"),
           Patch(facecolor="white", edgecolor="grey", label="not trained")]
    boundaries = []
    if steps_per_epoch:
        # step s (counted from 1) is in epoch ceil(s / steps_per_epoch): a boundary after each multiple
        boundaries = [e * steps_per_epoch + 0.5 for e in range(1, math.ceil(steps[-1] / steps_per_epoch))]
        for x in boundaries:
            for ax in (heat, line):
                ax.axvline(x, color="C3", linewidth=1.2, linestyle="--")
        for e in range(math.ceil(steps[-1] / steps_per_epoch)):
            heat.annotate(f"epoch {e + 1}", (e * steps_per_epoch + 0.5, n + 0.25), xytext=(3, 0),
                          textcoords="offset points", fontsize=7, color="C3", va="center")
        key.append(Line2D([], [], color="C3", linestyle="--", label="epoch boundary"))
    if len(explore_steps):
        heat.plot(list(explore_steps), [n + 0.25] * len(explore_steps), "v", color="C1", markersize=4,
                  linestyle="none")
        key.append(Line2D([], [], color="C1", linestyle="none", marker="v", label="explore step (gradient-norm top-k)"))
    heat.legend(handles=key, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    heat.set_title(f"{title}\n{distinct} of {matrix.shape[0]} blocks ever trained; up to {k} per step", fontsize=10)
    entropy = selection_entropy(matrix, window)
    line.plot(steps, entropy, color="C0", label=f"entropy of the last {window} steps' picks", clip_on=False, zorder=3)
    for value, text in ((math.log2(max(k, 1)), f"log2 {k}: the same {k} blocks"),
                        (math.log2(matrix.shape[0]), f"log2 {matrix.shape[0]}: all blocks evenly")):
        line.axhline(value, color="grey", linestyle=":", linewidth=0.8, zorder=1)
        line.annotate(text, (steps[0], value), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey")
    _entropy_axes(line, window)
    top = math.log2(max(matrix.shape[0], 2)) * 1.2
    line.set_ylim(-0.04 * top, top)  # 0 bits (one block, always the same) sits above the frame
    return _save(fig, path)


def plot_entropy_over_runs(traces: dict[str, tuple[np.ndarray, list[int]]], path: Path, window: int = WINDOW) -> Path:
    """Every traced run's selection entropy on one axes (label -> (matrix, steps)). Runs drawn
    later get thinner lines of another dash pattern, so coinciding lines (several runs at 0 bits,
    say) all stay visible."""
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    n, top = len(traces), 0.0
    for i, (label, (matrix, steps)) in enumerate(traces.items()):
        entropy = selection_entropy(matrix, window)
        top = max(top, float(np.nanmax(entropy)) if np.isfinite(entropy).any() else 0.0)
        ax.plot(steps, entropy, color=f"C{i % 10}", label=label, linestyle=LINESTYLES[i % len(LINESTYLES)],
                linewidth=1.0 + 2.0 * (n - 1 - i) / max(n - 1, 1), clip_on=False, zorder=2 + i)
    ax.set_ylim(-0.04 * max(top, 1.0), max(top, 1.0) * 1.1)
    _entropy_axes(ax, window)
    ax.set_ylabel(f"selection entropy, last {window} steps (bits)")
    fig.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=8)
    return _save(fig, path)


def block_methods(runs: pd.DataFrame, rows_by_dir: dict[str, list[dict] | None]) -> list[str]:
    """The methods some of whose runs' metrics rows carry the trace, in the order they appear."""
    traced = [m for m, d in zip(runs["method"], runs["run_dir"]) if rows_by_dir[d] and trace_of(rows_by_dir[d])]
    return list(dict.fromkeys(traced))


def selection_plots(runs: pd.DataFrame, out_dir: Path) -> list[str]:
    """`selection_<run>.png` for every run of a block method, and `selection_entropy.png` over
    them; returns one line per such run saying what was drawn (with AdaGradSelect's summary) or why not."""
    lines, traces = [], {}
    rows_by_dir = {d: read_rows(d) for d in runs["run_dir"]}
    candidates = runs[runs["method"].isin(block_methods(runs, rows_by_dir))]
    names = candidates["run_dir"].map(lambda d: Path(d).name)
    duplicated = names.duplicated(keep=False)
    for (_, row), name, twice in zip(candidates.iterrows(), names, duplicated):
        name = f"{Path(row['run_dir']).parent.name}_{name}" if twice else name
        rows = rows_by_dir[row["run_dir"]]
        trace = trace_of(rows) if rows is not None else None
        if trace is None:
            why = "no metrics.jsonl" if rows is None else f"no {TRACE_KEY} in metrics.jsonl"
            lines.append(f"selection: {row['run_dir']}: {why} (status {row['status']}): not drawn")
            continue
        matrix, steps = selection_matrix(trace, _n_blocks(row))
        spe = recorded_steps_per_epoch(row["run_dir"])
        explore = [int(r["step"]) for r in rows if r.get("explore") and r.get(TRACE_KEY) is not None]
        path = plot_selection(matrix, steps, f"{name}: {_label(row)}", out_dir / f"selection_{name}.png",
                              steps_per_epoch=spe, explore_steps=explore)
        traces[f"{name} ({row['method']})"] = (matrix, steps)
        line = f"plot: {path}"
        if any(r.get(NORMS_KEY) is not None for r in rows) and spe:
            summary = selection_summary(rows, spe)
            line += (f" (k {summary['k']}: {summary['distinct_blocks_epoch1']} distinct blocks in epoch 1; final set's "
                     f"overlap with the top-k by mean explore gradient norm {summary['final_overlap_with_grad_topk']:.2f})")
        lines.append(line)
    if traces:
        lines.append(f"plot: {plot_entropy_over_runs(traces, out_dir / 'selection_entropy.png')}")
    return lines


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
