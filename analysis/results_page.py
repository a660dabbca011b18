"""The comparison protocol's results page: `slmbench-report SELECTION FINAL --results PATH` writes
PATH.md and PATH.json from the records of the protocol's two stages (config `protocol.stage`):

- selection: every trained method x an lr grid, one seed, scored on the validation split; the lr
  of each method is the one with the highest validation accuracy (ties: the smaller lr);
- final: every method at its selected lr x seeds, scored on the test set.

Per method: the selected lr and the validation accuracy per grid point; the test accuracy (mean
over seeds, 95% CI); the paired difference from full fine-tuning and from LoRA (same questions,
same seeds; 95% CI and p from the hierarchical bootstrap of analysis/stats.py, seeds and questions
resampled); peak GPU memory and train time as ratios to full's. Then the papers' claims, each
marked holds / does not hold / inconclusive by the rules in `CLAIM_RULES` (written on the page).
Accuracies are in %, differences in accuracy points.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.comparison import p_text, paired_verdicts
from analysis.paper_numbers import NOT_COMPARABLE, PAPER_MODELS
from analysis.samples import read_samples
from analysis.stats import MIN_SEEDS, mean_interval, mean_over_seeds, paired_comparison
from analysis.summary import SHARED_FLAG, numeric, on_gpu, shared_device
from analysis.tables import BASELINE, method_sort_key
from bench.protocol import choose_lr

STAGE = "cfg/protocol.stage"
SELECTION, FINAL = "selection", "final"
STAGE_SPLITS = {SELECTION: "validation", FINAL: "test"}
LORA = "lora"
ADAGRADSELECT = "adagradselect"
# The papers' claims (arXiv 2512.15764v1 abstract; analysis/paper_numbers.csv) and how each is judged.
MEMORY_CLAIM, TIME_CLAIM = 0.35, 0.12          # "35% less GPU memory", "approximately 12% faster"
APPROX = 0.05                                  # our choice: "≈" = within 5 points of the claimed saving
LORA_CLAIM = 3.0                               # "outperforms LoRA (rank 256) by an average of 3%"
CLOSE_MARGIN = 2.0                             # our choice: "close to full FT" = not worse by more than 2 points
HOLDS, FAILS, OPEN = "*holds*", "*does not hold*", "*inconclusive*"
CLAIM_RULES = (
    f"- **Memory and time** (\"≈35% less memory\", \"≈12% faster\"): the ratio to full is measured per seed "
    f"(t interval over seeds). ≈ means within {APPROX:.0%} of the claimed saving: *holds* when the whole 95% "
    f"interval is at or below {1 - MEMORY_CLAIM + APPROX:.2f} (memory) / {1 - TIME_CLAIM + APPROX:.2f} (time), "
    "*does not hold* when it is wholly above, *inconclusive* otherwise, with fewer than 2 seeds, on CPU, or "
    "when the runs shared their GPU.\n"
    f"- **≈3 points above LoRA**: the paired difference from LoRA: *holds* when its 95% CI excludes 0 on the "
    "positive side, *does not hold* when it excludes 0 on the negative side, *inconclusive* when it contains 0 "
    f"(whether +{LORA_CLAIM:.0f} lies inside the CI is given as evidence).\n"
    f"- **Close to full FT**: the paired difference from full, read as non-inferiority with a margin of "
    f"{CLOSE_MARGIN:.0f} points (our choice): *holds* when the 95% CI's lower end is ≥ −{CLOSE_MARGIN:.0f}, "
    f"*does not hold* when its upper end is < −{CLOSE_MARGIN:.0f}, *inconclusive* otherwise.\n"
    f"- With fewer than {MIN_SEEDS} seeds no accuracy claim is decided (*inconclusive*): fewer seeds cannot "
    "measure seed-to-seed variance.")


MEMORY = "peak_gpu_memory_gib"  # peak allocated GPU memory while training, per process


class ProtocolError(ValueError):
    """Records that do not make the protocol's two stages; the message says what is missing."""


def write_results_page(runs: pd.DataFrame, path: Path, allow_shared_timings: bool = False) -> list[Path]:
    """PATH.md and PATH.json (a trailing .md or .json on PATH is dropped)."""
    path = Path(path)
    if path.suffix in (".md", ".json"):
        path = path.with_suffix("")
    results, page = protocol_results(runs, allow_shared_timings)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = path.parent / f"{path.name}.json", path.parent / f"{path.name}.md"
    json_path.write_text(json.dumps(_rounded(results), indent=2, allow_nan=False) + "\n")
    md_path.write_text(render(results, page))
    return [md_path, json_path]


def _rounded(value, digits: int = 6):
    """Floats to `digits` decimals (28.499999999999996 -> 28.5); lrs keep their own digits."""
    if isinstance(value, float):
        return value if abs(value) < 1e-3 else round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def _stage_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if STAGE not in runs.columns or not runs[STAGE].isin([SELECTION, FINAL]).any():
        raise ProtocolError("no record has config protocol.stage = selection or final: the results page is built "
                            "from the comparison protocol's records (its experiment config sets protocol.stage)")
    # The record's eval_split, else the config's eval.split (contract: selection runs score validation).
    splits = runs["eval_split"] if "eval_split" in runs.columns else pd.Series(None, index=runs.index, dtype=object)
    if "cfg/eval.split" in runs.columns:
        splits = splits.where(splits.notna(), runs["cfg/eval.split"])
    for stage, split in STAGE_SPLITS.items():
        wrong = runs[(runs[STAGE] == stage) & splits.notna() & (splits != split)]
        if len(wrong):
            raise ProtocolError(f"{wrong['run_dir'].iloc[0]}: protocol.stage={stage} but eval_split="
                                f"{splits[wrong.index[0]]}; a {stage} run is scored on {split}")
    selection, final = runs[runs[STAGE] == SELECTION], runs[runs[STAGE] == FINAL]
    if final.empty:
        raise ProtocolError("no record of the final stage (protocol.stage=final)")
    return selection, final


def protocol_results(runs: pd.DataFrame, allow_shared_timings: bool = False) -> tuple[dict, dict]:
    """(the JSON document, what else the page shows)."""
    selection, final = _stage_runs(runs)
    sel_ok, fin_ok = selection[selection["status"] == "ok"], final[final["status"] == "ok"]
    grids, chosen = _selection(sel_ok)
    per_method = {m: _final_pool(fin_ok, m, chosen.get(m)) for m in sorted(set(fin_ok["method_name"]), key=method_sort_key)}
    verdicts = {m: _verdicts(g) for m, g in per_method.items()}
    shared = shared_device(pd.concat([g for g in per_method.values()]))
    refused = bool(shared.any()) and not allow_shared_timings
    methods, evidence = [], {}
    for method, group in per_method.items():
        accuracy = _accuracy(group, verdicts[method])
        vs_full = _paired(verdicts, method, BASELINE)
        vs_lora = _paired(verdicts, method, LORA)
        memory = _ratio(group, per_method.get(BASELINE), MEMORY, refused)
        time = _ratio(group, per_method.get(BASELINE), "train_wall_clock_s", refused)
        evidence[method] = {"vs_full": vs_full, "vs_lora": vs_lora, "memory": memory, "time": time}
        methods.append({
            "method": method, "lr": chosen.get(method), "seeds": sorted(int(s) for s in group["seed"]),
            "test_accuracy_mean": accuracy["mean"], "ci95": accuracy["ci95"],
            "vs_full": _public(vs_full), "vs_lora": _public(vs_lora),
            "memory_ratio_vs_full": memory["ratio"], "time_ratio_vs_full": time["ratio"]})
    everything = pd.concat([selection, final])
    results = {
        "device": _one_or_list(everything["device"]) if "device" in everything else None,
        "commit": _one_or_list(everything["git_sha"]) if "git_sha" in everything else None,
        "wall_clock_s": _wall_clock(everything),
        "protocol": {
            "epochs": _one_or_list(final.get("cfg/train.epochs", pd.Series(dtype=float))),
            "seeds": sorted({int(s) for s in fin_ok["seed"]}),
            # The held-out split as recorded (result.json `validation.size`), else as configured.
            "validation_size": _one_or_list(selection["validation_size"]) if selection["validation_size"].notna().any()
            else _one_or_list(selection.get("cfg/task.validation_size", pd.Series(dtype=float))),
            "lr_grid": {m: sorted(points) for m, points in grids.items()},
        },
        "selection": [{"method": m, "lr": lr, "val_accuracy": acc}
                      for m, points in grids.items() for lr, acc in sorted(points.items())],
        "methods": methods,
        "adagradselect_selection": _adagradselect(per_method.get(ADAGRADSELECT)),
    }
    page = {"chosen": chosen, "evidence": evidence, "refused": refused, "runs": runs,
            "selection": selection, "final": final, "gpu": bool(on_gpu(fin_ok).all()) if len(fin_ok) else False,
            "model": _one_or_list(fin_ok["model"]), "task": _one_or_list(fin_ok["task"]),
            "name": _one_or_list(runs.get("cfg/protocol.name", pd.Series(dtype=object))),
            "lora_rank": _one_or_list(per_method[LORA]["cfg/method.r"]) if LORA in per_method and
            "cfg/method.r" in per_method[LORA] else None}
    return results, page


def _selection(sel_ok: pd.DataFrame) -> tuple[dict, dict]:
    """method -> {lr: validation accuracy (%), mean over its runs}, and method -> the chosen lr."""
    grids: dict[str, dict[float, float]] = {}
    for method in sorted(set(sel_ok["method_name"]), key=method_sort_key):
        rows = sel_ok[sel_ok["method_name"] == method]
        accuracy = numeric(rows, "accuracy")
        grids[method] = {float(lr): float(100 * accuracy[rows["cfg/train.lr"] == lr].mean())
                         for lr in sorted(set(rows["cfg/train.lr"]))}
    return grids, {m: choose_lr(points) for m, points in grids.items() if points}


def _final_pool(fin_ok: pd.DataFrame, method: str, lr: float | None) -> pd.DataFrame:
    """The method's final runs at its selected lr; they must pool (equal but for the seed)."""
    rows = fin_ok[fin_ok["method_name"] == method]
    if lr is not None:
        at_lr = rows[np.isclose(numeric(rows, "cfg/train.lr"), lr, rtol=1e-9, atol=0)]
        if at_lr.empty:
            raise ProtocolError(f"final stage: {method} has no run at its selected lr {lr:g} "
                                f"(its runs use {sorted(set(rows['cfg/train.lr']))})")
        rows = at_lr
    if rows["pool"].nunique(dropna=False) > 1:
        labels = ", ".join(sorted(set(rows["method"])))
        raise ProtocolError(f"final stage: {method}'s runs differ in more than the seed ({labels}); "
                            "they cannot be pooled")
    return rows.sort_values("seed")


def _verdicts(group: pd.DataFrame) -> dict | None:
    """{"metric": the primary metric, "seeds": {seed: the run's samples}}, or None when a run has
    no samples.jsonl."""
    seeds = {}
    for seed, run_dir in zip(group["seed"], group["run_dir"]):
        samples = read_samples(run_dir)
        if samples is None:
            return None
        seeds[int(seed)] = samples
    return {"metric": str(group["primary_metric"].dropna().iloc[0]), "seeds": seeds}


def _sets(samples: list[dict]) -> list[str]:
    return list(dict.fromkeys(s["eval_set"] for s in samples))


def _accuracy(group: pd.DataFrame, verdicts: dict | None) -> dict:
    if verdicts is None:  # no questions to resample: the mean of the records, no interval
        return {"mean": float(100 * numeric(group, "accuracy").mean()), "ci95": None}
    metric = verdicts["metric"]
    per_seed = [np.array([bool(s[metric]) for s in rows if metric in s]) for rows in verdicts["seeds"].values()]
    out = mean_over_seeds(per_seed)
    return {"mean": 100 * out["mean"], "ci95": [100 * out["lo"], 100 * out["hi"]]}


def _paired(verdicts: dict, method: str, baseline: str) -> dict | None:
    """The paired comparison (in points) of `method` with `baseline` over their common seeds; the
    questions of every eval set together (paired by eval set and id)."""
    if method == baseline or baseline not in verdicts:
        return None
    ours, base = verdicts[method], verdicts[baseline]
    if ours is None or base is None:
        return {"diff": None, "ci95": None, "p": None, "note": "no samples.jsonl: cannot pair questions"}
    seeds = sorted(set(ours["seeds"]) & set(base["seeds"]))
    if not seeds:
        return {"diff": None, "ci95": None, "p": None, "note": "no seed in common"}
    pairs = []
    for seed in seeds:
        theirs = base["seeds"][seed]
        parts = [paired_verdicts(ours["seeds"][seed], theirs, name, base["metric"]) for name in _sets(theirs)]
        pairs.append((np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])))
    result = paired_comparison(pairs)
    return {"diff": 100 * result["difference"], "ci95": [100 * result["lo"], 100 * result["hi"]],
            "p": result["p"], "seeds": result["seeds"], "enough_seeds": result["enough_seeds"], "note": ""}


def _public(comparison: dict | None) -> dict | None:
    return None if comparison is None else {k: comparison[k] for k in ("diff", "ci95", "p")}


def _ratio(group: pd.DataFrame, full: pd.DataFrame | None, metric: str, refused: bool) -> dict:
    """The ratio of the means to full's, and the t interval of the per-seed ratios."""
    empty = {"ratio": None, "lo": None, "hi": None, "n": 0, "why": ""}
    if full is None or full.empty:
        return {**empty, "why": "no full fine-tuning run"}
    if metric == MEMORY:
        # Peaks are per process (torch.cuda.max_memory_allocated), so a shared card leaves them honest;
        # a run relaunched from a checkpoint peaked only after its relaunch: left out, and said so.
        group, full = (frame[frame["resumed_from_step"].isna()] if "resumed_from_step" in frame else frame
                       for frame in (group, full))
        if group.empty or full.empty:
            return {**empty, "why": "every run was resumed from a checkpoint (peaks of a part of the run only)"}
    elif refused and (shared_device(group).any() or shared_device(full).any()):
        return {**empty, "why": f"refused: the runs shared their GPU ({SHARED_FLAG} keeps them; "
                                f"a solo timing stage measures time alone)"}
    ours, base = numeric(group, metric), numeric(full, metric)
    if ours.isna().all() or base.isna().all():
        return {**empty, "why": f"no {metric} recorded (CPU runs record no GPU memory)"}
    by_seed = dict(zip(full["seed"], base))
    per_seed = [v / by_seed[s] for s, v in zip(group["seed"], ours) if s in by_seed and by_seed[s]]
    interval = mean_interval(per_seed)
    return {"ratio": float(ours.mean() / base.mean()), "lo": _finite(interval["lo"]), "hi": _finite(interval["hi"]),
            "n": interval["n"], "why": ""}


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _one_or_list(values: pd.Series):
    distinct = list(dict.fromkeys(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))))
    distinct = [int(v) if isinstance(v, float) and v.is_integer() else v for v in distinct]
    distinct = [v.item() if isinstance(v, np.generic) else v for v in distinct]
    return None if not distinct else distinct[0] if len(distinct) == 1 else distinct


def _wall_clock(rows: pd.DataFrame) -> float | None:
    """First start to last finish over the records (both stages)."""
    starts, ends = numeric(rows, "started_at").dropna(), numeric(rows, "finished_at").dropna()
    return float(ends.max() - starts.min()) if len(starts) and len(ends) else None


def _adagradselect(group: pd.DataFrame | None) -> dict | None:
    """The selection summary (analysis/selection.py) of AdaGradSelect's first final run, with every
    final run's own under `per_seed`."""
    if group is None or group.empty:
        return None
    from analysis.selection import read_rows, recorded_steps_per_epoch, selection_summary

    per_seed = []
    for _, run in group.sort_values("seed").iterrows():
        rows = read_rows(run["run_dir"])
        if rows is None:
            continue
        steps, epochs = numeric(run.to_frame().T, "train_steps").iloc[0], numeric(run.to_frame().T, "cfg/train.epochs").iloc[0]
        derived = int(steps // epochs) if not (math.isnan(steps) or math.isnan(epochs) or not epochs) else len(rows)
        summary = selection_summary(rows, recorded_steps_per_epoch(run["run_dir"]) or derived)  # older records: derived
        if summary is not None:
            per_seed.append({"seed": int(run["seed"]), **summary})
    if not per_seed:
        return None
    first = {k: v for k, v in per_seed[0].items() if k != "seed"}
    return {**first, "per_seed": per_seed}


# -- the page ---------------------------------------------------------------------------------------

def _num(value, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _ci(interval) -> str:
    return "–" if not interval else f"[{interval[0]:.1f}, {interval[1]:.1f}]"


def _diff_cell(comparison: dict | None) -> str:
    if comparison is None:
        return "–"
    if comparison["diff"] is None:
        return comparison["note"]
    return f"{comparison['diff']:+.1f} {_ci(comparison['ci95'])}, p {p_text(comparison['p'])}"


def _ratio_cell(ratio: dict) -> str:
    if ratio["ratio"] is None:
        return ratio["why"]
    interval = f" [{ratio['lo']:.2f}, {ratio['hi']:.2f}]" if ratio["lo"] is not None else ""
    return f"{ratio['ratio']:.2f}{interval}"


def claims(results: dict, page: dict) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for the papers' four claims about AdaGradSelect."""
    evidence = page["evidence"].get(ADAGRADSELECT)
    if evidence is None:
        return [(c, OPEN, "no AdaGradSelect run in the final stage") for c in
                ("≈35% less memory", "≈12% faster", "≈3 points above LoRA r=256 on GSM8K", "close to full FT")]
    rows = []
    for claim, key, saving in (("≈35% less memory", "memory", MEMORY_CLAIM), ("≈12% faster", "time", TIME_CLAIM)):
        ratio, bound = evidence[key], 1 - saving + APPROX
        if not page["gpu"]:
            rows.append((claim, OPEN, NOT_COMPARABLE))
            continue
        if ratio["ratio"] is None:
            rows.append((claim, OPEN, ratio["why"]))
            continue
        text = f"ratio to full {_ratio_cell(ratio)} (n={ratio['n']}; bound {bound:.2f})"
        if ratio["lo"] is None:
            rows.append((claim, OPEN, text + "; fewer than 2 seeds: no interval"))
        else:
            rows.append((claim, HOLDS if ratio["hi"] <= bound else FAILS if ratio["lo"] > bound else OPEN, text))
    lora = evidence["vs_lora"]
    rank = f"; our LoRA rank {page['lora_rank']}" if page.get("lora_rank") not in (None, 256) else ""
    rows.append(("≈3 points above LoRA r=256 on GSM8K", *_difference_verdict(
        lora, lambda lo, hi: HOLDS if lo > 0 else FAILS if hi < 0 else OPEN,
        lambda lo, hi: f"; +{LORA_CLAIM:.0f} {'inside' if lo <= LORA_CLAIM <= hi else 'outside'} the CI{rank}")))
    rows.append(("close to full FT", *_difference_verdict(
        evidence["vs_full"], lambda lo, hi: HOLDS if lo >= -CLOSE_MARGIN else FAILS if hi < -CLOSE_MARGIN else OPEN,
        lambda lo, hi: f"; margin −{CLOSE_MARGIN:.0f} points")))
    return rows


def _difference_verdict(comparison: dict | None, rule, more) -> tuple[str, str]:
    if comparison is None or comparison["diff"] is None:
        return OPEN, "no paired comparison" + (f" ({comparison['note']})" if comparison else "")
    lo, hi = comparison["ci95"]
    text = f"difference {_diff_cell(comparison)} over {comparison['seeds']} seeds" + more(lo, hi)
    if not comparison["enough_seeds"]:
        return OPEN, text + f"; fewer than {MIN_SEEDS} seeds"
    return rule(lo, hi), text


def render(results: dict, page: dict) -> str:
    protocol = results["protocol"]
    model, task = page["model"], page["task"]
    lines = [f"# Results: {page['name'] or 'comparison protocol'} ({model} on {task})", "",
             "Written by `slmbench-report <selection dir> <final dir> --results <path>` from the run records "
             "(analysis/results_page.py); nothing on this page is typed by hand.", "",
             f"- device: {results['device']}", f"- commit: {results['commit']}",
             f"- wall clock, first start to last finish over both stages: {_num(results['wall_clock_s'], 0, ' s')}",
             f"- epochs: {protocol['epochs']}; final seeds: {protocol['seeds']}; "
             f"validation split: {protocol['validation_size']} examples held out of the training file", "",
             "## Learning-rate selection (validation accuracy, %)", "",
             "Each method's lr is the grid point with the highest validation accuracy; ties go to the smaller lr.", ""]
    grid = sorted({lr for lrs in protocol["lr_grid"].values() for lr in lrs})
    lines += ["| method | " + " | ".join(f"lr {lr:g}" for lr in grid) + " | selected lr |",
              "|---|" + "---|" * (len(grid) + 1)]
    by_method: dict[str, dict] = {}
    for entry in results["selection"]:
        by_method.setdefault(entry["method"], {})[entry["lr"]] = entry["val_accuracy"]
    for method, points in by_method.items():
        chosen = page["chosen"].get(method)
        cells = [("**" + _num(points[lr]) + "**" if lr == chosen else _num(points[lr])) if lr in points else ""
                 for lr in grid]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {chosen:g} |")
    lines += ["", "## Test accuracy and paired differences", "",
              "Accuracy: mean over seeds, in %. Differences: accuracy points, paired on the same questions and "
              "seeds. Every 95% CI and p comes from a hierarchical bootstrap (10,000 replicates, fixed seed): "
              "the seeds are resampled, then the questions within each seed, so the interval covers "
              "seed-to-seed variance as well as the questions'. Memory (peak allocated GPU memory while "
              "training) and time (training wall clock) are ratios to full fine-tuning's mean, with the t "
              "interval of the per-seed ratios.", "",
              "| method | lr | seeds | test accuracy % [95% CI] | vs full | vs LoRA | memory / full | time / full |",
              "|---|---|---|---|---|---|---|---|"]
    for entry in results["methods"]:
        ev = page["evidence"][entry["method"]]
        lines.append(f"| {entry['method']} | {'– (not selected)' if entry['lr'] is None else format(entry['lr'], 'g')} | "
                     f"{len(entry['seeds'])} | {_num(entry['test_accuracy_mean'])} {_ci(entry['ci95'])} | "
                     f"{_diff_cell(ev['vs_full'])} | {_diff_cell(ev['vs_lora'])} | {_ratio_cell(ev['memory'])} | "
                     f"{_ratio_cell(ev['time'])} |")
    if page["refused"]:
        lines += ["", f"Some runs shared their GPU with other jobs: their time ratios are refused ({SHARED_FLAG} "
                      f"keeps them). Memory peaks are per process, so they stand."]
    summary = results["adagradselect_selection"]
    lines += ["", "## AdaGradSelect's block selection (its final runs)", ""]
    if summary is None:
        lines.append("Not available (no AdaGradSelect final run with a metrics.jsonl, or analysis.selection has no "
                     "adagradselect_summary).")
    else:
        lines += [f"- k (blocks per step): {summary['k']}",
                  f"- distinct blocks trained in epoch 1: {summary['distinct_blocks_epoch1']}",
                  f"- overlap of the final step's blocks with the top-k by mean gradient norm over the explore "
                  f"steps: {_num(summary['final_overlap_with_grad_topk'], 2)}", "",
                  "The top-level figures are the first seed's; every final run's:", "",
                  "| seed | k | distinct blocks, epoch 1 | final overlap with the gradient-norm top-k |",
                  "|---|---|---|---|"]
        lines += [f"| {s['seed']} | {s['k']} | {s['distinct_blocks_epoch1']} | {_num(s['final_overlap_with_grad_topk'], 2)} |"
                  for s in summary.get("per_seed", [])]
    size = "135M" if str(model).startswith("smollm2-135m") else str(model)
    lines += ["", f"## The papers' claims at {size}", "",
              f"The claims are from the AdaGradSelect abstract (arXiv 2512.15764v1) for "
              f"{', '.join(PAPER_MODELS)}; here they are tested on {model}.", "",
              "| claim | verdict | evidence |", "|---|---|---|"]
    lines += [f"| {c} | {v} | {e} |" for c, v, e in claims(results, page)]
    lines += ["", "Rules:", "", CLAIM_RULES, ""]
    not_counted = [f"- {r.status}: {r.run_dir}" for r in pd.concat([page["selection"], page["final"]]).itertuples()
                   if r.status != "ok"]
    not_counted += [f"- superseded ({d['status']}): {d['run_dir']}" for d in page["runs"].attrs.get("superseded", [])]
    if not_counted:
        lines += ["## Records not counted", "", *not_counted, ""]
    return "\n".join(lines)
