"""`slmbench-report [DIR...]`: the table of every run below DIR (default outputs/)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from analysis.collect import collect

SWEEP_COLUMNS = {
    "method": "method", "model": "model", "task": "task", "seed": "seed", "status": "status",
    "accuracy": "accuracy", "peak_gpu_memory_gib": "peak GPU GiB", "peak_host_rss_gib": "peak RSS GiB",
    "train_wall_clock_s": "train s", "train_tokens_per_s": "tokens/s", "trainable_params": "trainable",
}


def sweep_table(df: pd.DataFrame) -> pd.DataFrame:
    """The basic table: one row per run, in run-dir order; failed runs stay, with their status."""
    if df.empty:
        return pd.DataFrame(columns=list(SWEEP_COLUMNS.values()))
    table = df.sort_values("run_dir").reindex(columns=list(SWEEP_COLUMNS)).rename(columns=SWEEP_COLUMNS)
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with no extra dependency (pandas' to_markdown needs tabulate)."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int) and abs(value) >= 1000:
            return f"{value:,}"
        return str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.astype(object).itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tables from slmbench run records.")
    parser.add_argument("dirs", nargs="*", type=Path, default=[Path("outputs")],
                        help="directories searched for result.json (default: outputs/)")
    args = parser.parse_args(argv)
    df = collect(args.dirs)
    print(to_markdown(sweep_table(df)))


if __name__ == "__main__":
    main()
