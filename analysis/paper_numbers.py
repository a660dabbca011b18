"""What the papers report (analysis/paper_numbers.csv plus users' own files), next to ours.

One row per (paper, model, method, task, metric). `kind` says what `value` is:
  value       the metric itself (accuracy in %, memory in GiB, time in s)
  change_pct  relative change from `baseline` in % ((method - baseline) / baseline * 100)
  difference  method minus `baseline` (accuracy points)
`model` is a model name, `mean`: the paper's "on average across models" (ours: the mean over
the models present in our runs), or `best`: the paper's "up to" (ours: the model where the method
does best: the lowest value of a cost such as memory or time, the highest of anything else).
`task` is the eval-set name our runs record (`accuracy_by_task`'s key: the metamathqa task's
`gsm8k_test` and `math500`), or empty (training metrics, or the primary accuracy). An empty `value` is a claim without a number: it is listed, never filled in.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.summary import against_baseline, on_gpu, summarize

DEFAULT_FILE = Path(__file__).with_name("paper_numbers.csv")
COLUMNS = ["paper", "model", "method", "baseline", "task", "metric", "kind", "value", "source", "note"]
KINDS = ("value", "change_pct", "difference")
MEAN_OVER_MODELS = "mean"
BEST_OVER_MODELS = "best"
# Costs: lower is better (for `best`); every other metric is better higher.
LOWER_IS_BETTER = ("peak_gpu_memory_gib", "peak_gpu_reserved_gib", "eval_peak_gpu_memory_gib", "peak_host_rss_gib",
                   "train_wall_clock_s", "eval_wall_clock_s", "median_step_s")


# The papers' models (arXiv 2512.15764v1 abstract: "Qwen2.5-0.5B, LLaMA3.2-1B, and Phi4-mini-3.8B"):
# their time and memory claims are compared only with GPU runs of these (conf/model/*.yaml names).
PAPER_MODELS = ("qwen2.5-0.5b", "llama3.2-1b", "phi4-mini")
# Real models on a GPU that are not the papers': their ratios are shown, with this said.
OTHER_REAL_MODELS = {"smollm2-135m": "not the paper's model (135M)"}
NOT_COMPARABLE = "not comparable (CPU / tiny model)"


class PaperNumbersError(ValueError):
    """A bad reference file; the message names the file, line and column."""


def load_paper_numbers(paths: list[Path]) -> pd.DataFrame:
    """Concatenate reference files (the shipped one first, then the users'), each checked."""
    frames = [_load_one(Path(p)) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)


def _load_one(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as err:
        raise PaperNumbersError(f"{path}: cannot read reference numbers: {err}") from err
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise PaperNumbersError(f"{path}:1: missing columns {missing}; expected {','.join(COLUMNS)}")
    values = []
    for i, row in table.iterrows():
        line = i + 2  # the header is line 1
        for column in ("paper", "model", "method", "metric", "source"):
            if not row[column].strip():
                raise PaperNumbersError(f"{path}:{line}: column '{column}' is empty")
        if row["kind"] not in KINDS:
            raise PaperNumbersError(f"{path}:{line}: kind={row['kind']!r}; allowed: {', '.join(KINDS)}")
        if row["kind"] != "value" and not row["baseline"].strip():
            raise PaperNumbersError(f"{path}:{line}: kind={row['kind']} needs a 'baseline' method")
        try:
            values.append(float(row["value"]) if row["value"].strip() else float("nan"))
        except ValueError:
            raise PaperNumbersError(f"{path}:{line}: value={row['value']!r} is not a number "
                                    "(leave it empty when the paper gives none)") from None
    table = table[COLUMNS].copy()
    table["value"] = values
    table["file"] = str(path)
    return table


def metric_column(metric: str, task: str) -> str:
    """The runs-DataFrame column a claim is about: accuracy on one eval set is `acc/<set>`."""
    return f"acc/{task}" if metric == "accuracy" and task else metric


def is_accuracy(column: str) -> bool:
    return column == "accuracy" or column.startswith("acc/")


def compare_with_ours(runs: pd.DataFrame, claims: pd.DataFrame) -> pd.DataFrame:
    """Each claim with our number of the same kind beside it (`ours`, and `ours_over` = the
    (task, model) pairs it averages). Accuracies are compared in % like the papers."""
    ours, over, comparable = [], [], []
    for _, claim in claims.iterrows():
        column = metric_column(claim["metric"], claim["task"])
        claim_runs, note = comparable_runs(runs, column)
        comparable.append(note)
        if claim_runs is None:
            ours.append(float("nan"))
            over.append("")
            continue
        summary = summarize(claim_runs, [column])
        if is_accuracy(column):
            summary[["mean", "std"]] *= 100
        if claim["kind"] != "value":
            summary = against_baseline(summary, claim["baseline"])
        field = {"value": "mean", "change_pct": "change_pct", "difference": "difference"}[claim["kind"]]
        rows = summary[summary["method"] == claim["method"]]
        if claim["model"] not in (MEAN_OVER_MODELS, BEST_OVER_MODELS):
            rows = rows[rows["model"] == claim["model"]]
        rows = rows[rows[field].notna()]
        if claim["model"] == BEST_OVER_MODELS and len(rows):
            best = rows[field].idxmin() if claim["metric"] in LOWER_IS_BETTER else rows[field].idxmax()
            rows = rows.loc[[best]]
        ours.append(rows[field].mean() if len(rows) else float("nan"))
        over.append(", ".join(f"{t}/{m}" for t, m in zip(rows["task"], rows["model"])))
    out = claims.copy()
    out["ours"] = ours
    out["ours_over"] = over
    out["comparable"] = comparable
    return out


def comparable_runs(runs: pd.DataFrame, column: str) -> tuple[pd.DataFrame | None, str]:
    """The runs a claim about `column` may be set beside, and what to say about them. Accuracy:
    every run. Time and memory: GPU runs of the papers' models; else GPU runs of another real
    model, said so; else none (a CPU or tiny-model timing says nothing about the papers')."""
    if is_accuracy(column) or runs.empty:
        return runs, ""
    gpu = on_gpu(runs)
    papers = runs[gpu & runs["model"].isin(PAPER_MODELS)]
    if len(papers):
        return papers, ""
    other = runs[gpu & runs["model"].isin(list(OTHER_REAL_MODELS))]
    if len(other):
        return other, "; ".join(OTHER_REAL_MODELS[m] for m in dict.fromkeys(other["model"]))
    return None, NOT_COMPARABLE
