"""`slmbench`: the Hydra entry. One run (a sweep with `-m`): skip-finished -> build -> train -> keep the model
-> evaluate -> record, each a line of `run_job`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import bench.config.schema  # noqa: F401 - registers the structured-config schema before Hydra composes
from bench.config.checks import check_known_keys, check_numbers
from bench.errors import ConfigError, input_error

# Torch, transformers and the eval engines load inside the functions below (bench.run.ledger),
# after Hydra has composed the config and the pure checks have passed: `--help`, `--cfg job`, a
# misspelt key and a number out of range take about a second instead of the heavy imports' many seconds.

log = logging.getLogger("slmbench")


def run_job(cfg: DictConfig, run_dir: Path, names: dict[str, str], wandb_group: str | None = None) -> dict:
    """One run. Writes result.json whatever happens (ok | failed | oom | preempted) and returns it;
    bad input found before training (config, data, a busy store or run dir) is refused instead,
    with no record. A stop signal at any phase ends the run with a record (exit 143 / 130)."""
    from bench.run.ledger import RunLedger

    ledger = RunLedger(cfg, run_dir, names, wandb_group)  # the run's identity, store and records
    with ledger.signals:
        if (done := ledger.finished()) is not None:
            return ledger.reuse(done)
        with ledger.refusing_bad_input():
            ledger.build()
        with ledger.recording_failure():
            ledger.train()
            ledger.keep_model()
            ledger.evaluate()
            return ledger.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    names = {"method": hydra_cfg.runtime.choices.get("method"), "model": cfg.model.name, "task": cfg.task.name}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if not multirun:  # refused before torch loads; a sweep's jobs record the refusal in their result.json
            check_known_keys(cfg)
            check_numbers(cfg)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # per-weight loading bars drown the run's own progress bars
        record = run_job(cfg, Path(hydra_cfg.runtime.output_dir), names,
                         Path(hydra_cfg.sweep.dir).name if multirun else None)
        log.info("%s on %s/%s: accuracy %.3f", names["method"], names["model"], names["task"],
                 record["metrics"]["accuracy"])
    except Exception as err:  # noqa: BLE001 - reported and recorded in result.json, never swallowed silently
        if multirun:  # the sweep goes on; the failed record is in the job's result.json and in the table
            log.error("job %s failed: %s: %s", hydra_cfg.job.num, type(err).__name__, err)
            return
        if (bad_input := input_error(err)) is not None:
            kind = "config" if isinstance(bad_input, ConfigError) else "data"
            print(f"slmbench: {kind} error: {bad_input}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
