"""Hydra callbacks: the sweep's table, printed when a multirun ends."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrintSweepTable(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from analysis.collect import collect  # pandas: loaded when the table is printed, not at every start
        from analysis.report import sweep_table, to_markdown

        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"\nslmbench sweep: {sweep_dir}\n{to_markdown(sweep_table(collect([sweep_dir])))}\n"
              "(95% CI: Wilson score interval over the run's eval questions; `slmbench-report "
              f"{sweep_dir}` compares methods on the same questions)\n", flush=True)
