"""`slmbench-report [DIR...]`: the paper tables and plots rebuilt from run records.

Prints markdown to the terminal (every run, the accuracy table, the efficiency table, the
papers' claims beside ours) and writes CSV + LaTeX + markdown files and PNG plots next to the
records (`<DIR>/report/` by default). Rows pool only runs equal but for the seed, a repeated run
counts once (analysis/pooling.py); runs that shared their GPU give no time or memory figure unless
--allow-shared-timings. `--results PATH` also writes the comparison protocol's results page
(analysis/results_page.py). `sweep_table`, `seed_summary_table` and `to_markdown` are also the
tables that analysis/callbacks.py prints when a multirun ends.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

from analysis.collect import DIED, UNKNOWN_RUNNING, RecordError, collect, frame_from_records, mixed_commits_warning
from analysis.comparison import HEADER as PAIRED_HEADER, paired_table
from analysis.paper_numbers import DEFAULT_FILE, PaperNumbersError, load_paper_numbers
from analysis.pooling import duplicate_seed_warnings, relabel
from analysis.summary import SHARED_FLAG, numeric, summarize, without_shared_timings
from analysis.tables import (BASELINE, Table, accuracy_table, claims_table, efficiency_table, interval_text,
                             method_sort_key, with_accuracy_intervals)
from bench.records.schema import natural_key

SWEEP_COLUMNS = {
    "method": "method", "model": "model", "task": "task", "seed": "seed", "status": "status",
    "accuracy": "accuracy", "peak_gpu_memory_gib": "peak GPU GiB", "peak_host_rss_gib": "peak RSS GiB",
    "train_wall_clock_s": "train s", "train_tokens_per_s": "tokens/s", "trainable_params": "trainable",
}
CI_COLUMN = "95% CI"
MEMORY_METRICS = ("peak_gpu_memory_gib", "peak_gpu_reserved_gib", "peak_host_rss_gib")


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """The basic table: one row per run, in run-dir order; failed runs stay, with their status.
    Each accuracy has its 95% CI beside it (Wilson over the run's questions)."""
    columns = list(SWEEP_COLUMNS.values())
    columns.insert(columns.index("accuracy") + 1, CI_COLUMN)
    if df.empty:
        return pd.DataFrame(columns=columns)
    ordered = df.sort_values("run_dir", key=lambda col: col.map(natural_key))
    table = ordered.reindex(columns=list(SWEEP_COLUMNS)).rename(columns=SWEEP_COLUMNS)
    lo, hi = numeric(ordered, "accuracy_ci95_lo"), numeric(ordered, "accuracy_ci95_hi")
    table.insert(table.columns.get_loc("accuracy") + 1, CI_COLUMN,
                 [interval_text(a, b, digits=3, brackets=False) for a, b in zip(lo, hi)])
    return table.reset_index(drop=True)


SEED_SUMMARY_HEADER = ("Mean over seeds (accuracy: the mean of the ok runs' accuracies, std: their sample standard "
                       "deviation; 95% CI: the Student t interval of the mean over seeds, n - 1 degrees of freedom, as "
                       "in `slmbench-report`'s accuracy table. It covers how much training varies from seed to seed "
                       "on these questions; with few seeds it is wide, 3 seeds: mean ± 2.48 std. One seed: Wilson "
                       "over its questions)")


def seed_summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, model, task), in method order: the accuracy's mean over seeds with its std
    and 95% interval (analysis/tables.py with_accuracy_intervals, the report's accuracy table's), and
    how many seeds count (ok runs), naming the runs that did not finish ok."""
    columns = ["method", "model", "task", "seeds", "accuracy", "std", CI_COLUMN]
    if df.empty:
        return pd.DataFrame(columns=columns)
    summary = with_accuracy_intervals(summarize(df, ["accuracy"]), df)
    summary = summary.assign(order=summary["method"].map(method_sort_key)).sort_values("order", kind="stable")
    rows = []
    for r in summary.itertuples():
        group = df[(df["task"] == r.task) & (df["model"] == r.model) & (df["method"] == r.method)]
        not_ok = int((group["status"] != "ok").sum())
        rows.append({"method": r.method, "model": r.model, "task": r.task,
                     "seeds": f"{r.n}" + (f" ({not_ok} not ok)" if not_ok else ""), "accuracy": r.mean,
                     "std": r.std, CI_COLUMN: interval_text(r.lo, r.hi, digits=3, brackets=False)})
    return pd.DataFrame(rows, columns=columns)


def error_text(row) -> str:
    """What went wrong with a run that did not finish ok, in words (a died record has no error)."""
    if row.status == DIED:
        return "its process is gone and left no result (killed: SIGKILL, the OOM killer, a node failure)"
    if row.status == UNKNOWN_RUNNING:
        return "recorded as running on another host: still running there, or died without a result"
    parts = [str(v) for v in (row.error_type, row.error) if v is not None and not pd.isna(v)]
    return ": ".join(parts) or "no error recorded"


def _cell(value, float_format: str = ",.3f") -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return format(value, float_format)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1000:
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _float_format(column: pd.Series) -> str:
    """One format per column, so its numbers line up: whole numbers with thousands separators
    once any value reaches 1000 (tokens/s: 431 and 1,129), else three decimals."""
    values = [v for v in column if isinstance(v, float) and not pd.isna(v)]
    return ",.0f" if values and max(abs(v) for v in values) >= 1000 else ",.3f"


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with no extra dependency (pandas' to_markdown needs tabulate); each column's
    numbers share one format."""
    cells = table.astype(object)
    formats = [_float_format(cells[c]) for c in cells.columns]
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_cell(v, f) for v, f in zip(row, formats)) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def flat(display: pd.DataFrame) -> pd.DataFrame:
    """Index levels become columns and column groups join as "model · eval set" (markdown/CSV)."""
    table = display.reset_index()
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [" · ".join(str(p) for p in col if str(p)) for col in table.columns]
    return table


def to_latex(display: pd.DataFrame) -> str:
    """booktabs LaTeX with the column groups as multicolumns (pandas' writer, jinja2 behind it)."""
    latex = display.to_latex(multicolumn=True, multicolumn_format="c", multirow=True, escape=True)
    return latex.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def write_table(table: Table, out_dir: Path, stem: str) -> None:
    """`<stem>.md` and `<stem>.tex` show the table; `<stem>.csv` holds the numbers behind it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(to_markdown(flat(table.display)) + "\n")
    (out_dir / f"{stem}.tex").write_text(to_latex(table.display))
    table.data.to_csv(out_dir / f"{stem}.csv", index=False)


def default_out_dir(dirs: list[Path]) -> Path:
    """Next to the records: `<DIR>/report`, or `<their common parent>/report` for several."""
    if len(dirs) == 1:
        base = dirs[0].parent if dirs[0].name == "result.json" else dirs[0]
    else:
        base = Path(os.path.commonpath([d.resolve() for d in dirs]))
    return base / "report"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slmbench-report", description="Paper tables and plots from slmbench run records.")
    parser.add_argument("dirs", nargs="*", type=Path, help="directories searched for result.json (default: outputs/)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where tables and plots go (default: <DIR>/report, next to the records)")
    parser.add_argument("--paper-numbers", type=Path, action="append", default=[], metavar="CSV",
                        help=f"extra reference rows, same columns as {DEFAULT_FILE.name} (repeatable)")
    parser.add_argument("--memory-metric", default="peak_gpu_memory_gib", choices=MEMORY_METRICS,
                        help="the memory column of the efficiency table and plot (CPU runs record "
                             "only peak_host_rss_gib)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", default=None,
                        help="read the runs from W&B's API instead of disk (needs network and a login)")
    parser.add_argument("--baseline", default=BASELINE,
                        help=f"the method every other is compared with on the same questions (default: {BASELINE})")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument(SHARED_FLAG, dest="allow_shared_timings", action="store_true",
                        help="keep the time and memory of runs that shared their GPU with other jobs "
                             "(result.json device_share.jobs_on_device_max > 1); by default they are left out")
    parser.add_argument("--results", type=Path, default=None, metavar="PATH",
                        help="also write the comparison protocol's results page, PATH.md and PATH.json, "
                             "from the records of its selection and final stages (config protocol.stage)")
    args = parser.parse_args(argv)
    if args.wandb and args.dirs:
        parser.error("give either run directories or --wandb, not both")
    if not args.wandb and not args.dirs:
        args.dirs = [Path("outputs")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.wandb:
            from analysis.wandb_source import records_from_wandb

            runs = frame_from_records(records_from_wandb(args.wandb))
            out_dir = args.out or Path("report")
        else:
            runs = collect(args.dirs)
            out_dir = args.out or default_out_dir(args.dirs)
        claims = load_paper_numbers([DEFAULT_FILE, *args.paper_numbers])
        if args.results is not None:
            from analysis.results_page import ProtocolError, write_results_page

            try:
                pages = write_results_page(runs, args.results, allow_shared_timings=args.allow_shared_timings)
            except ProtocolError as err:
                raise RecordError(str(err)) from err
    except (RecordError, PaperNumbersError, FileNotFoundError) as err:
        print(f"slmbench-report: {err}", file=sys.stderr)
        sys.exit(2)
    if args.results is not None:  # the tables: the final stage, at the selected lrs (the page has the selection)
        print(f"tables below: the final stage's runs (config protocol.stage=final); {args.results}.md has the selection\n")
        runs = relabel(runs[runs["cfg/protocol.stage"] == "final"], runs.attrs.get("identity", {}))
    report(runs, claims, out_dir, args.memory_metric, plots=not args.no_plots, baseline=args.baseline,
           allow_shared_timings=args.allow_shared_timings)
    if args.results is not None:
        print("results page: " + ", ".join(str(p) for p in pages))


def report(runs: pd.DataFrame, claims: pd.DataFrame, out_dir: Path, memory_metric: str, plots: bool = True,
           baseline: str = BASELINE, allow_shared_timings: bool = False) -> None:
    """Print the tables as markdown and write them (and the plots) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    superseded = runs.attrs.get("superseded", [])
    print(f"## Runs ({len(runs)})\n\n{to_markdown(sweep_table(runs))}\n")
    if superseded:
        print(f"{len(superseded)} records repeat a run listed above (same config and seed) and are not counted "
              "(the newest ok record of a run counts):")
        for dropped in superseded:
            print(f"  {dropped['status']}: {dropped['run_dir']} (counted: {dropped['kept']})")
        print()
    for warning in [mixed_commits_warning(runs), *duplicate_seed_warnings(runs)]:
        if warning is not None:
            print(f"{warning}\n")
    if runs.empty:
        print(f"no result.json found; nothing else to report (wrote {out_dir / 'runs.csv'})")
        return
    not_ok = runs[runs["status"] != "ok"]
    if len(not_ok):
        print(f"{len(not_ok)} of {len(runs)} runs did not finish ok:")
        for r in not_ok.itertuples():
            print(f"  {r.status}: {r.run_dir}: {error_text(r)}")
        print()
    if not allow_shared_timings:
        runs, shared_note = without_shared_timings(runs)
        if shared_note is not None:
            print(f"{shared_note}\n")
    # Claims about methods these runs do not include would only be empty rows: named, then left out.
    about_ours = claims["method"].isin(set(runs["method"]))
    if (~about_ours).any():
        print(f"{(~about_ours).sum()} published claims are about methods not in these runs "
              f"({', '.join(sorted(set(claims.loc[~about_ours, 'method'])))}): left out of the tables\n")
    claims = claims[about_ours]
    tables = {
        "accuracy": ("Accuracy (%, mean ± std over seeds (n) [95% CI: t over seeds; one run: Wilson over its questions])",
                     accuracy_table(runs, claims)),
        "efficiency": (f"Efficiency (Δ: change relative to full fine-tuning, %, with the 95% CI of the "
                       f"per-seed paired change; memory: {memory_metric})",
                       efficiency_table(runs, memory_metric, claims)),
        "paired": (f"Against {baseline} on the same questions ({PAIRED_HEADER})", paired_table(runs, baseline)),
        "paper_vs_ours": ("The papers' claims beside ours", claims_table(runs, claims)),
    }
    for stem, (title, table) in tables.items():
        print(f"## {title}\n\n{to_markdown(flat(table.display))}\n")
        write_table(table, out_dir, stem)
    no_memory = numeric(runs, memory_metric).isna().all()
    if no_memory:
        print(f"note: no run recorded {memory_metric} (CPU runs record none; --memory-metric peak_host_rss_gib "
              "reads the host's RSS, which sweeps sharing one process distort): its columns are empty and "
              "accuracy is plotted against trainable parameters instead of memory")
    if plots:
        from analysis.plots import plot_accuracy_vs_cost, plot_training_time
        from analysis.selection import selection_plots

        scatter = (plot_accuracy_vs_cost(runs, "trainable_params", out_dir / "accuracy_vs_trainable_params.png")
                   if no_memory else plot_accuracy_vs_cost(runs, memory_metric, out_dir / "accuracy_vs_memory.png"))
        for path in (scatter, plot_training_time(runs, out_dir / "train_time.png")):
            if path is not None:
                print(f"plot: {path}")
        print("\n".join(selection_plots(runs, out_dir)))
    print(f"tables: {out_dir}/{{{','.join(tables)}}}.{{md,csv,tex}}, runs.csv")


if __name__ == "__main__":
    main()
