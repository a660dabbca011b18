"""Hydra callbacks: the sweep's tables (one row per run, then each method's mean over seeds), printed
when a multirun ends."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrintSweepTable(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from analysis.collect import collect  # pandas: loaded when the table is printed, not at every start
        from analysis.report import SEED_SUMMARY_HEADER, seed_summary_table, sweep_table, to_markdown

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = collect([sweep_dir])
        print(f"\nslmbench sweep: {sweep_dir}\n{to_markdown(sweep_table(runs))}\n"
              "(95% CI: Wilson score interval over the run's eval questions; `slmbench-report "
              f"{sweep_dir}` compares methods on the same questions)\n", flush=True)
        # Runs equal but for the seed share a row (collect labels the others apart): their mean over seeds.
        if not runs.empty and runs.duplicated(["task", "model", "method"]).any():
            print(f"{SEED_SUMMARY_HEADER}:\n{to_markdown(seed_summary_table(runs))}\n", flush=True)
