"""The papers' tables from the runs DataFrame: accuracy, efficiency, and the papers' claims.

Every builder returns a `Table`: `display` (formatted text cells, for markdown/LaTeX/terminal)
and `data` (the numbers behind it, long form, for CSV). Accuracies are shown in % like the papers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from analysis.paper_numbers import (BEST_OVER_MODELS, MEAN_OVER_MODELS, NOT_COMPARABLE, comparable_runs,
                                    compare_with_ours)
from analysis.pareto import pareto_front
from analysis.pooling import base_method
from analysis.stats import mean_interval, paired_seed_deltas
from analysis.summary import against_baseline, numeric, status_counts, summarize

BASELINE = "full"
SWEEP_CONFIG = "config.yaml"  # conf/config.yaml: the method list is written once, in its default sweep


def default_sweep_methods() -> list[str]:
    """The methods of conf/config.yaml's default sweep (`hydra.sweeper.params.method`), in order."""
    from omegaconf import OmegaConf

    methods = OmegaConf.load(resources.files("conf") / SWEEP_CONFIG).hydra.sweeper.params.method
    return [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]


# Row order: the default sweep's (reference first, then baselines, then the selection methods);
# methods it does not list follow alphabetically.
METHOD_ORDER = default_sweep_methods()
MEAN_ROW = "mean over models"
EFFICIENCY_METRICS = {"train_wall_clock_s": "train s", "train_tokens_per_s": "tokens/s"}
MEMORY_LABELS = {"peak_gpu_memory_gib": "peak GPU GiB", "peak_gpu_reserved_gib": "reserved GPU GiB",
                 "peak_host_rss_gib": "peak RSS GiB"}


@dataclass
class Table:
    display: pd.DataFrame
    data: pd.DataFrame


def method_sort_key(method: str) -> tuple[int, str, str]:
    """Sweep order by the plain method name; a method's configurations ("lora [train.lr=…]") together."""
    name = base_method(method)
    rank = METHOD_ORDER.index(name) if name in METHOD_ORDER else len(METHOD_ORDER)
    return (rank, name, str(method))


def ordered_methods(methods) -> list[str]:
    return sorted(set(methods), key=method_sort_key)


def eval_set_columns(runs: pd.DataFrame) -> list[str]:
    """`acc/<set>` columns (each set's primary metric), in first-seen order."""
    return [c for c in runs.columns if c.startswith("acc/") and c.count("/") == 1]


def number(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:,.{digits}f}"


def signed(value: float, digits: int = 1) -> str:
    return "" if value is None or math.isnan(value) else f"{value:+.{digits}f}"


def stat_cell(mean: float, std: float, n: int, failed: int = 0, oom: int = 0, digits: int = 1,
              lo: float = math.nan, hi: float = math.nan) -> str:
    """"62.3 ± 1.2 (n=3) [59.3, 65.3]" (the 95% CI in brackets, when there is one); failed and
    OOM runs are named, never dropped; nothing at all -> ""."""
    problems = [f"{k} {label}" for k, label in ((failed, "failed"), (oom, "oom")) if k]
    if n == 0 or math.isnan(mean):
        return "; ".join(problems)
    text = number(mean, digits) + ("" if math.isnan(std) else f" ± {number(std, digits)}")
    return f"{text} (n={n}{'; ' + '; '.join(problems) if problems else ''})" + interval_text(lo, hi, digits)


def interval_text(lo: float, hi: float, digits: int = 1, brackets: bool = True) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return ""
    text = f"{number(lo, digits)}, {number(hi, digits)}"
    return f" [{text}]" if brackets else text


def interval_columns(column: str) -> tuple[str, str]:
    """The runs-DataFrame columns holding a run's 95% interval of `accuracy` or `acc/<set>`."""
    return (f"{column}/ci95_lo", f"{column}/ci95_hi") if column.startswith("acc/") else (
        f"{column}_ci95_lo", f"{column}_ci95_hi")


def with_accuracy_intervals(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`lo`, `hi` per summary row (accuracy metrics, as proportions): the t interval of the mean
    over seeds when n >= 2, the run's own interval over questions (Wilson) when n == 1."""
    ok = runs[runs["status"] == "ok"]
    intervals = []
    for r in summary.itertuples():
        group = ok[(ok["task"] == r.task) & (ok["model"] == r.model) & (ok["method"] == r.method)]
        values = numeric(group, r.metric)
        if r.n >= 2:  # a proportion's interval stays inside [0, 1] (t knows nothing of the bounds)
            seeds = mean_interval(values.dropna().tolist())
            intervals.append((max(0.0, seeds["lo"]), min(1.0, seeds["hi"])))
        elif r.n == 1:
            lo_col, hi_col = interval_columns(r.metric)
            one = group[values.notna()]
            intervals.append((float(numeric(one, lo_col).iloc[0]), float(numeric(one, hi_col).iloc[0])))
        else:
            intervals.append((math.nan, math.nan))
    return summary.assign(lo=[lo for lo, _ in intervals], hi=[hi for _, hi in intervals])


def _with_counts(summary: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    return summary.merge(counts, on=["task", "model", "method"], how="left")


def _row_label(task: str, method: str, several_tasks: bool) -> str:
    return f"{task} / {method}" if several_tasks else method


def accuracy_table(runs: pd.DataFrame, claims: pd.DataFrame | None = None) -> Table:
    """Rows: methods; column groups: model x eval set; cells mean ± std over seeds (n), in %.
    Paper rows ("<method> [paper]") sit under a method where a paper published that cell."""
    sets = eval_set_columns(runs)
    summary = with_accuracy_intervals(summarize(runs, sets), runs)
    summary[["mean", "std", "lo", "hi"]] *= 100
    data = _with_counts(summary, status_counts(runs))
    data["eval_set"] = data["metric"].str.removeprefix("acc/")
    several_tasks = runs["task"].nunique() > 1 if not runs.empty else False
    models = list(dict.fromkeys(runs["model"])) if not runs.empty else []
    columns = pd.MultiIndex.from_tuples([(m, s.removeprefix("acc/")) for m in models for s in sets],
                                        names=["model", "eval set"])
    rows: dict[str, dict] = {}
    keys = data[["task", "method"]].drop_duplicates()
    keys = keys.assign(order=keys["method"].map(method_sort_key)).sort_values(["task", "order"])
    paper = _accuracy_values(claims)
    for task, method in zip(keys["task"], keys["method"]):
        cells = data[(data["task"] == task) & (data["method"] == method)]
        rows[_row_label(task, method, several_tasks)] = {
            (r.model, r.eval_set): stat_cell(r.mean, r.std, r.n, r.failed, r.oom, lo=r.lo, hi=r.hi)
            for r in cells.itertuples()}
        published = paper[paper["method"] == method]
        if len(published):
            rows[_row_label(task, method, several_tasks) + " [paper]"] = {
                (r.model, r.task): number(r.value) for r in published.itertuples()}
    display = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).fillna("")
    display.index.name = "method"
    return Table(display, data.drop(columns="metric"))


def _accuracy_values(claims: pd.DataFrame | None) -> pd.DataFrame:
    """Published accuracy cells: kind=value, a named model and an eval set."""
    if claims is None or claims.empty:
        return pd.DataFrame(columns=["method", "model", "task", "value"])
    keep = ((claims["kind"] == "value") & (claims["metric"] == "accuracy") & (claims["task"] != "")
            & ~claims["model"].isin([MEAN_OVER_MODELS, BEST_OVER_MODELS]) & claims["value"].notna())
    return claims[keep]


def efficiency_table(runs: pd.DataFrame, memory_metric: str, claims: pd.DataFrame | None = None,
                     accuracy_metric: str = "accuracy") -> Table:
    """Rows: model x method, then each method's mean over models; peak memory, train time and
    tokens/s (mean ± std), each with its change relative to full fine-tuning in %, the paper's
    change where published, and whether the method is on the model's memory/accuracy frontier."""
    metrics = {memory_metric: MEMORY_LABELS.get(memory_metric, memory_metric), **EFFICIENCY_METRICS}
    summary = summarize(runs, [*metrics, accuracy_metric])
    summary.loc[summary["metric"] == accuracy_metric, ["mean", "std"]] *= 100  # % like the papers
    summary = against_baseline(summary, BASELINE)
    data = _with_counts(summary, status_counts(runs))
    frontier = _frontier_flags(data, memory_metric, accuracy_metric)
    published = _published_changes(claims)
    accuracy_intervals = with_accuracy_intervals(summarize(runs, [accuracy_metric]), runs).set_index(GROUP_KEYS)
    per_seed = {metric: _seed_values(runs, metric) for metric in metrics}
    several_tasks = runs["task"].nunique() > 1 if not runs.empty else False
    groups = data[["task", "model", "method"]].drop_duplicates()
    model_order = {m: i for i, m in enumerate(dict.fromkeys(runs["model"]))}  # the sweep's order
    groups = groups.assign(m=groups["model"].map(model_order), order=groups["method"].map(method_sort_key))
    groups = groups.sort_values(["task", "m", "order"], kind="stable")
    rows = []
    for task, model, method in groups[["task", "model", "method"]].itertuples(index=False):
        cells = data[(data["task"] == task) & (data["model"] == model) & (data["method"] == method)]
        row = {"model": f"{task} / {model}" if several_tasks else model, "method": method}
        first = cells.iloc[0]
        acc = cells[cells["metric"] == accuracy_metric].iloc[0]
        interval = accuracy_intervals.loc[(task, model, method)]
        row[f"{accuracy_metric} %"] = stat_cell(acc["mean"], acc["std"], acc["n"])
        row[f"{accuracy_metric} % 95% CI"] = interval_text(100 * interval["lo"], 100 * interval["hi"], brackets=False)
        for metric, label in metrics.items():
            m = cells[cells["metric"] == metric].iloc[0]
            row[label] = stat_cell(m["mean"], m["std"], m["n"], digits=2 if metric == memory_metric else 1)
            row[f"Δ {label} %"] = signed(m["change_pct"])
            delta = _paired_delta(per_seed[metric], task, model, method)
            row[f"Δ {label} % 95% CI"] = interval_text(delta["pct_lo"], delta["pct_hi"], brackets=False)
            if metric in published:
                row[f"paper Δ {label} %"] = signed(published[metric].get((model, method), float("nan")))
        row["frontier"] = "yes" if frontier.get((task, model, method), False) else ""
        row["runs"] = _runs_text(first)
        rows.append(row)
    for method in ordered_methods(data["method"]):
        row = {"model": MEAN_ROW, "method": method}
        for metric, label in metrics.items():
            changes = data[(data["method"] == method) & (data["metric"] == metric)]["change_pct"].dropna()
            row[f"Δ {label} %"] = signed(changes.mean())
            if metric in published:
                paper = signed(published[metric].get((MEAN_OVER_MODELS, method), float("nan")))
                # The papers' GPU figures sit beside ours only where ours could be compared with them.
                comparable = comparable_runs(runs, metric)[0] is not None
                row[f"paper Δ {label} %"] = paper if comparable or not paper else f"{paper} [ours: {NOT_COMPARABLE}]"
        rows.append(row)
    display = pd.DataFrame(rows).fillna("") if rows else pd.DataFrame(columns=["model", "method"])
    data = data.assign(on_frontier=[frontier.get(k, False) for k in zip(data["task"], data["model"], data["method"])])
    return Table(display.set_index(["model", "method"]), data)


GROUP_KEYS = ["task", "model", "method"]


def _seed_values(runs: pd.DataFrame, metric: str) -> dict[tuple, dict]:
    """(task, model, method) -> {seed: value} over the ok runs that recorded `metric`."""
    ok = runs[(runs["status"] == "ok") & numeric(runs, metric).notna()]
    values = numeric(ok, metric)
    out: dict[tuple, dict] = {}
    for key, seed, value in zip(zip(ok["task"], ok["model"], ok["method"]), ok["seed"], values):
        out.setdefault(key, {})[seed] = value
    return out


def _paired_delta(values: dict[tuple, dict], task: str, model: str, method: str) -> dict:
    """The method's per-seed differences from the baseline's same seed (t interval over seeds), in
    % of the baseline's mean; NaN without two paired seeds."""
    ours, base = values.get((task, model, method), {}), values.get((task, model, BASELINE), {})
    if method == BASELINE or len(set(ours) & set(base)) < 2:
        return {"pct_lo": math.nan, "pct_hi": math.nan}
    return paired_seed_deltas(ours, base)


def _runs_text(counts: pd.Series) -> str:
    parts = [f"{int(counts[s])} {s}" for s in ("ok", "failed", "oom") if counts.get(s, 0)]
    return ", ".join(parts)


def _frontier_flags(data: pd.DataFrame, memory_metric: str, accuracy_metric: str) -> dict:
    """(task, model, method) -> on that model's frontier (lower memory, higher accuracy)."""
    means = data.set_index(["task", "model", "method", "metric"])["mean"].unstack("metric")
    flags: dict = {}
    for _, points in means.groupby(level=["task", "model"]):
        flags.update(pareto_front(points, memory_metric, accuracy_metric).to_dict())
    return flags


def _published_changes(claims: pd.DataFrame | None) -> dict[str, dict]:
    """metric -> {(model, method): the paper's % change from full fine-tuning}."""
    if claims is None or claims.empty:
        return {}
    keep = (claims["kind"] == "change_pct") & (claims["baseline"] == BASELINE) & claims["value"].notna()
    out: dict[str, dict] = {}
    for r in claims[keep].itertuples():
        out.setdefault(r.metric, {})[(r.model, r.method)] = r.value
    return out


def claims_table(runs: pd.DataFrame, claims: pd.DataFrame) -> Table:
    """Every published claim with ours beside it; claims without a number stay empty."""
    compared = compare_with_ours(runs, claims)
    display = pd.DataFrame({
        "paper": compared["paper"], "model": compared["model"], "method": compared["method"],
        "vs": compared["baseline"], "eval set": compared["task"], "metric": compared["metric"],
        "kind": compared["kind"],
        "paper value": [_claim_text(v, k) for v, k in zip(compared["value"], compared["kind"])],
        "ours": [note if note == NOT_COMPARABLE else _claim_text(v, k)
                 for v, k, note in zip(compared["ours"], compared["kind"], compared["comparable"])],
        "ours over": compared["ours_over"],
        "note": [note if note != NOT_COMPARABLE else "" for note in compared["comparable"]],
        "source": compared["source"],
    })
    return Table(display.set_index(["paper", "model", "method"]), compared)


def _claim_text(value: float, kind: str) -> str:
    if kind == "change_pct":
        return signed(value) + ("%" if not math.isnan(value) else "")
    return signed(value) if kind == "difference" else number(value)

