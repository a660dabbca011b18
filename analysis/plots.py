"""PNG plots from the runs DataFrame: accuracy vs a cost (peak GPU memory; on CPU sweeps, which
record none, trainable parameters) per model with the Pareto frontier marked, and training time per
method. Drawn on matplotlib `Figure` objects (Agg canvas, no pyplot state); legends sit outside the
axes so they never cover a point; points that coincide are drawn side by side (a few points apart)
so none hides another; every error bar says what it is and over how many runs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import numpy as np
from matplotlib.figure import Figure

from analysis.pareto import pareto_front
from analysis.stats import mean_interval
from analysis.summary import against_baseline, numeric, status_counts, summarize
from analysis.tables import BASELINE, method_sort_key, ordered_methods, with_accuracy_intervals

MARKERS = "osD^vP*Xh<>p"


def _style(methods: list[str]) -> dict[str, dict]:
    """One colour and marker per method, the same in every panel."""
    colors = [f"C{i % 10}" for i in range(len(methods))]
    return {m: {"color": c, "marker": MARKERS[i % len(MARKERS)]} for i, (m, c) in enumerate(zip(methods, colors))}


def _panels(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, model) in first-seen order: the sweep's model order."""
    return list(dict.fromkeys(zip(frame["task"], frame["model"])))


COST_LABELS = {"trainable_params": "trainable parameters (log scale)"}
SPREAD = 0.025  # our choice: coinciding markers are drawn this share of the x span apart


def plot_accuracy_vs_cost(runs: pd.DataFrame, memory_metric: str, path: Path,
                          accuracy_metric: str = "accuracy") -> Path | None:
    """One panel per model: mean accuracy (%) against a mean cost (`memory_metric`: a peak
    memory, or trainable_params), with 95% CI bars (t over seeds; a single run's accuracy: Wilson
    over its questions) and n beside each point; the frontier methods (by their means) are ringed
    and joined by a dashed line. None when no run has both values."""
    summary = with_accuracy_intervals(summarize(runs, [memory_metric, accuracy_metric]), runs)
    memory_rows = summary["metric"] == memory_metric
    seeds = [mean_interval(numeric(runs[(runs["status"] == "ok") & (runs["task"] == r.task) & (runs["model"] == r.model)
                                        & (runs["method"] == r.method)], memory_metric).dropna().tolist())
             for r in summary[memory_rows].itertuples()]
    summary.loc[memory_rows, "lo"] = [s["lo"] for s in seeds]
    summary.loc[memory_rows, "hi"] = [s["hi"] for s in seeds]
    wide = summary.set_index(["task", "model", "method", "metric"])[["mean", "lo", "hi"]].unstack("metric")
    means = wide["mean"].dropna(subset=[memory_metric, accuracy_metric])
    if means.empty:
        return None
    present = set((t, m) for t, m, _ in means.index)
    panels = [p for p in _panels(runs) if p in present]
    style = _style(ordered_methods(runs["method"]))
    several_tasks = len({t for t, _ in panels}) > 1
    # Wide enough for the legend row under a single panel too.
    fig = Figure(figsize=(max(6.5, 4.2 * len(panels)), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    counts = summary[summary["metric"] == accuracy_metric].set_index(["task", "model", "method"])["n"]
    for ax, (task, model) in zip(axes, panels):
        points = means.xs((task, model), level=["task", "model"])
        lows = wide["lo"].xs((task, model), level=["task", "model"]).reindex(points.index)
        highs = wide["hi"].xs((task, model), level=["task", "model"]).reindex(points.index)
        front = pareto_front(points, memory_metric, accuracy_metric)
        log_x = memory_metric == "trainable_params"
        xs = _spread(points[memory_metric], 100 * points[accuracy_metric], log_x)
        for method, p in points.iterrows():
            xerr = _bar(p[memory_metric], lows.at[method, memory_metric], highs.at[method, memory_metric])
            yerr = _bar(p[accuracy_metric], lows.at[method, accuracy_metric], highs.at[method, accuracy_metric], 100)
            ax.errorbar(xs[method], 100 * p[accuracy_metric], xerr=xerr, yerr=yerr,
                        linestyle="none", markersize=8, capsize=3, label=method, **style[method],
                        markeredgecolor="black" if front[method] else style[method]["color"],
                        markeredgewidth=2 if front[method] else 1)
            ax.annotate(f"n={int(counts.get((task, model, method), 0))}", (xs[method], 100 * p[accuracy_metric]),
                        xytext=(6, -10), textcoords="offset points", fontsize=7, color="dimgrey")
        line = points[front].sort_values(memory_metric)
        ax.plot(line[memory_metric], 100 * line[accuracy_metric], linestyle="--", color="grey",
                linewidth=1, zorder=0, label="Pareto frontier (ringed points)")
        ax.set_title(f"{task} / {model}" if several_tasks else model)
        ax.set_xlabel(COST_LABELS.get(memory_metric, memory_metric.replace("_", " ").replace("gib", "(GiB)")))
        if memory_metric == "trainable_params":
            ax.set_xscale("log")
        ax.set_ylabel(f"{accuracy_metric} (%)\nbars: 95% CI (t over the n seeds;\nn=1: Wilson over questions)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.margins(0.15)
    _legend_below(fig, axes, order=[*style, "Pareto frontier (ringed points)"])
    return _save(fig, path)


def plot_accuracy_vs_memory(runs: pd.DataFrame, memory_metric: str, path: Path,
                            accuracy_metric: str = "accuracy") -> Path | None:
    return plot_accuracy_vs_cost(runs, memory_metric, path, accuracy_metric)


def _spread(x: pd.Series, y: pd.Series, log_x: bool = False) -> pd.Series:
    """The x at which to draw each method: methods whose points coincide (within 1% of the panel's
    span on both axes) are drawn side by side, `SPREAD` of the x span apart, centred on the true x
    (on a log axis, in log space)."""
    u = np.log10(x.clip(lower=1)) if log_x else x.astype(float)
    span_x = (u.max() - u.min()) or abs(u.max()) or 1.0
    span_y = (y.max() - y.min()) or abs(y.max()) or 1.0
    groups: list[list] = []
    for method in u.index:
        for group in groups:
            first = group[0]
            if abs(u[method] - u[first]) <= 0.01 * span_x and abs(y[method] - y[first]) <= 0.01 * span_y:
                group.append(method)
                break
        else:
            groups.append([method])
    shifted = u.copy()
    for group in groups:
        for i, method in enumerate(group):
            shifted[method] = u[method] + (i - (len(group) - 1) / 2) * SPREAD * span_x
    return 10 ** shifted if log_x else shifted


def _bar(centre: float, lo: float, hi: float, scale: float = 1.0):
    """matplotlib's asymmetric error bar [[below], [above]], or None without an interval."""
    if pd.isna(lo) or pd.isna(hi):
        return None
    return [[scale * (centre - lo)], [scale * (hi - centre)]]


def plot_training_time(runs: pd.DataFrame, path: Path, metric: str = "train_wall_clock_s") -> Path | None:
    """One panel per model: horizontal bars of mean training time per method (±1 std), each
    labelled with its value and its change vs full fine-tuning; a method whose runs all failed
    or ran out of memory gets its row with that written in it. None when no run has a time."""
    summary = against_baseline(summarize(runs, [metric]), BASELINE)
    summary = summary.merge(status_counts(runs), on=["task", "model", "method"], how="left")
    timed = summary.dropna(subset=["mean"])
    if timed.empty:
        return None
    panels = [p for p in _panels(runs) if p in set(zip(timed["task"], timed["model"]))]
    several_tasks = len({t for t, _ in panels}) > 1
    style = _style(ordered_methods(runs["method"]))
    n_rows = int(summary.groupby(["task", "model"]).size().max())
    fig = Figure(figsize=(4.4 * len(panels), 0.5 * n_rows + 1.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (task, model) in zip(axes, panels):
        rows = summary[(summary["task"] == task) & (summary["model"] == model)]
        rows = rows.sort_values("method", key=lambda col: col.map(method_sort_key))
        y = list(range(len(rows)))
        mean, std = rows["mean"].fillna(0), rows["std"].fillna(0)
        ax.barh(y, mean, xerr=std, capsize=3, color=[style[m]["color"] for m in rows["method"]])
        for yi, r, err in zip(y, rows.itertuples(), std):
            problems = ", ".join(f"{int(k)} {s}" for k, s in ((r.failed, "failed"), (r.oom, "oom")) if k)
            if pd.isna(r.mean):
                label = problems or "no time recorded"
            else:
                label = f"{r.mean:,.1f} s" + ("" if pd.isna(r.change_pct) or r.change_pct == 0
                                              else f" ({r.change_pct:+.0f}%)") + f", n={int(r.n)}" + (
                                              f"; {problems}" if problems else "")
            # Past the error bar's cap, so the text never sits on the bar or the whisker.
            ax.annotate(label, (0 if pd.isna(r.mean) else r.mean + err, yi), xytext=(6, 0),
                        textcoords="offset points", va="center", fontsize=8)
        ax.set_yticks(y, rows["method"])
        ax.set_ylim(n_rows - 0.5, -0.5)  # the papers' row order, top to bottom; equal bar heights
        ax.set_title(f"{task} / {model}" if several_tasks else model)
        ax.set_xlabel(f"training wall-clock (s), mean over n seeds; bars: ±1 std (none for n=1)\n"
                      f"(%): change vs {BASELINE}", fontsize=8)
        ax.set_xlim(left=0, right=1.4 * float((mean + std).max()))
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _legend_below(fig: Figure, axes, order: list[str]) -> None:
    """One legend for all panels, under them (outside every axes), in the tables' method order."""
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    labels = [label for label in order if label in handles]
    fig.legend([handles[k] for k in labels], labels, loc="outside lower center",
               ncol=min(len(labels), 4 if len(axes) == 1 else 7), frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path
