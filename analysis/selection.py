"""Selection traces of the block methods: which blocks trained at each step (metrics.jsonl's
`active_block_ids`), drawn as a block x step heatmap per run, with the selection entropy over time.

Selection entropy at step t (our choice of summary): the Shannon entropy, in bits, of how the
selections of the last `WINDOW` steps spread over the blocks, p_b = (steps in the window that
trained block b) / (block selections in the window). A method that keeps training the same k
blocks sits at log2(k); one that spreads its k picks evenly over all n blocks reaches log2(n).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.records.schema import METRICS_FILE
from bench.tasks.sources import read_jsonl

TRACE_KEY = "active_block_ids"
# The methods that train a subset of blocks (methods/*.py); a run of another method is drawn too
# when its metrics.jsonl has the trace.
BLOCK_METHODS = ("topk", "adagradselect", "ist", "lisa", "badam")
WINDOW = 10  # steps; our choice: topk's default re-selection period (conf/method/topk.yaml)


def read_trace(run_dir: str | Path) -> dict[int, list[int]] | None:
    """{step: active block ids} from the run's metrics.jsonl (a step logged twice, as after a
    resume, keeps its last line); None when no line carries the trace or there is no file."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    trace = {int(row.data["step"]): [int(b) for b in row.data[TRACE_KEY]]
             for row in read_jsonl(path) if row.data.get(TRACE_KEY) is not None}
    return dict(sorted(trace.items())) or None


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


def _label(row: pd.Series) -> str:
    return f"{row['method']} on {row['model']}, seed {row['seed']}"


def plot_selection(matrix: np.ndarray, steps: list[int], title: str, path: Path, window: int = WINDOW) -> Path:
    """Heatmap (block x step: dark = trained that step) over the entropy of the selections."""
    k = int(matrix.sum(axis=0).max())
    distinct = int((matrix.sum(axis=1) > 0).sum())
    fig = Figure(figsize=(max(6.5, min(14, 0.06 * len(steps) + 4)), 5.2), layout="constrained")
    heat, line = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, matrix.shape[0] - 0.5)
    heat.imshow(matrix, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                extent=extent)
    heat.set_ylabel("block")
    heat.set_title(f"{title}\n{distinct} of {matrix.shape[0]} blocks ever trained; up to {k} per step", fontsize=10)
    entropy = selection_entropy(matrix, window)
    line.plot(steps, entropy, color="C0", label=f"entropy of the last {window} steps' picks")
    for value, text in ((math.log2(max(k, 1)), f"log2 {k}: the same {k} blocks"),
                        (math.log2(matrix.shape[0]), f"log2 {matrix.shape[0]}: all blocks evenly")):
        line.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        line.annotate(text, (steps[0], value), xytext=(2, 2), textcoords="offset points", fontsize=7, color="grey")
    line.set_xlabel("optimizer step")
    line.set_ylabel("bits")
    line.set_ylim(0, math.log2(max(matrix.shape[0], 2)) * 1.2)
    line.grid(alpha=0.3)
    return _save(fig, path)


def plot_entropy_over_runs(traces: dict[str, tuple[np.ndarray, list[int]]], path: Path, window: int = WINDOW) -> Path:
    """Every traced run's selection entropy on one axes (label -> (matrix, steps))."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (label, (matrix, steps)) in enumerate(traces.items()):
        ax.plot(steps, selection_entropy(matrix, window), color=f"C{i % 10}", label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"selection entropy, last {window} steps (bits)")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=8)
    return _save(fig, path)


def selection_plots(runs: pd.DataFrame, out_dir: Path) -> list[str]:
    """`selection_<run>.png` for every block-method run (and any run with a trace), and
    `selection_entropy.png` over them; returns one line per such run saying what was drawn or why not."""
    lines, traces = [], {}
    candidates = runs[runs["method"].isin(BLOCK_METHODS) | runs["run_dir"].map(lambda d: read_trace(d) is not None)]
    names = candidates["run_dir"].map(lambda d: Path(d).name)
    duplicated = names.duplicated(keep=False)
    for (_, row), name, twice in zip(candidates.iterrows(), names, duplicated):
        name = f"{Path(row['run_dir']).parent.name}_{name}" if twice else name
        trace = read_trace(row["run_dir"])
        if trace is None:
            why = "no metrics.jsonl" if not (Path(row["run_dir"]) / METRICS_FILE).is_file() else f"no {TRACE_KEY} in metrics.jsonl"
            lines.append(f"selection: {row['run_dir']}: {why} (status {row['status']}): not drawn")
            continue
        matrix, steps = selection_matrix(trace, _n_blocks(row))
        path = plot_selection(matrix, steps, f"{name}: {_label(row)}", out_dir / f"selection_{name}.png")
        traces[f"{name} ({row['method']})"] = (matrix, steps)
        lines.append(f"plot: {path}")
    if traces:
        lines.append(f"plot: {plot_entropy_over_runs(traces, out_dir / 'selection_entropy.png')}")
    return lines


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
