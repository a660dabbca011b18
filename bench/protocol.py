"""The comparison protocol: each method's learning rate chosen on a validation split, then seeds on test.

Two stages of one experiment config (conf/experiment/smollm2_gsm8k.yaml; `protocol.stage`):

- `selection`: every trained method at every point of its lr grid (`protocol.lr_grid`), seed 0,
  scored on the validation split (`eval.split=validation`: examples held out of the training file,
  bench/tasks/validation.py);
- `final`: every method at the lr its selection runs chose, seeds 0, 1, 2, scored on the test set.

The final stage reads the choice from the selection stage's records (`protocol.selection_dir`),
never from a hand-edited file: `train.lr: ${protocol_lr:${hydra:runtime.choices.method}}` is
resolved by `protocol_lr` below when the run's config is composed, so the lr a run trained at is
the one in its resolved config (result.json `config.train.lr`). The choosing rule is `best_lr`,
written once here; analysis reads the same rule through `selection_table`.

    python -m bench.protocol run smollm2_gsm8k [override ...]   # both stages, one after the other
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from bench.errors import ConfigError
from bench.paths import resolve_path
from bench.records.schema import record_paths

STAGES = ("selection", "final")
RESOLVER = "protocol_lr"


def selection_records(selection_dir: str | Path) -> list[dict]:
    """The selection stage's run records below `selection_dir` (not the copies W&B keeps)."""
    root = resolve_path(selection_dir)
    if not root.is_dir():
        raise ConfigError(f"protocol.selection_dir={str(selection_dir)!r}: {root} is not a directory "
                          f"(give the selection stage's sweep dir)")
    records = []
    for path in record_paths(root):
        record = json.loads(path.read_text())
        if ((record.get("config") or {}).get("protocol") or {}).get("stage") == "selection":
            records.append(record)
    return records


def selection_table(records: list[dict]) -> list[dict]:
    """One row per (method, lr) of `ok` selection runs scored on validation: {method, lr, val_accuracy}
    (the newest record of a repeated (method, lr) counts)."""
    rows: dict[tuple[str, float], dict] = {}
    for record in sorted(records, key=lambda r: r.get("finished_at") or 0):
        if record.get("status") != "ok" or record.get("eval_split") != "validation":
            continue
        lr = float(record["config"]["train"]["lr"])
        rows[record["method"], lr] = {"method": record["method"], "lr": lr,
                                      "val_accuracy": record["metrics"]["accuracy"]}
    return sorted(rows.values(), key=lambda row: (row["method"], row["lr"]))


def choose_lr(val_accuracy_by_lr: dict[float, float]) -> float:
    """The selection rule, written once (the final stage's lr and the results page both use it): the
    lr with the highest validation accuracy; a tie goes to the smaller lr (our choice: the gentler
    update)."""
    return min(val_accuracy_by_lr, key=lambda lr: (-val_accuracy_by_lr[lr], lr))


def best_lr(records: list[dict], method: str, where: str = "the records") -> float:
    """The chosen lr (`choose_lr`) of `method`; only `ok` runs scored on validation count."""
    rows = [row for row in selection_table(records) if row["method"] == method]
    if not rows:
        raise ConfigError(f"protocol.selection_dir: no `ok` selection run of method {method!r} scored on "
                          f"validation in {where}; run the selection stage for it first")
    return choose_lr({row["lr"]: row["val_accuracy"] for row in rows})


def protocol_lr(method: str, *, _root_) -> float:
    """`${protocol_lr:<method>}`: the lr of this run of the protocol (see the module docstring).
    A method that trains nothing (none) takes its grid's first value: it is never used."""
    from hydra.utils import get_class  # the method's class says whether it trains

    protocol = _root_.protocol
    grid = protocol.lr_grid.get(method)
    if grid is None or len(grid) == 0:
        raise ConfigError(f"protocol.lr_grid has no learning rates for method {method!r}; "
                          f"it has: {', '.join(protocol.lr_grid) or 'none'}")
    if not get_class(_root_.method._target_).trains:
        return float(grid[0])
    if protocol.stage == "selection":
        index = protocol.lr_index
        if index is None or not 0 <= int(index) < len(grid):
            raise ConfigError(f"protocol.lr_index={index}: the selection stage needs an index into "
                              f"protocol.lr_grid.{method} (0..{len(grid) - 1})")
        return float(grid[int(index)])
    if protocol.stage == "final":
        if not protocol.selection_dir:
            raise ConfigError("protocol.stage=final needs protocol.selection_dir (the selection stage's sweep dir)")
        return best_lr(selection_records(protocol.selection_dir), method, protocol.selection_dir)
    raise ConfigError(f"protocol.stage={protocol.stage!r}: ${{{RESOLVER}:...}} needs one of {', '.join(STAGES)}")


def register_resolver() -> None:
    """Called before Hydra composes (bench/config/schema.py register)."""
    # Not cached (OmegaConf cannot cache a resolver that reads `_root_`): each read of train.lr in the
    # final stage reads the selection records again, a few small files, a few times per run.
    OmegaConf.register_new_resolver(RESOLVER, protocol_lr, replace=True)


# -- the driver: both stages as two Hydra multiruns ---------------------------------------------------

def run_stages(experiment: str, overrides: list[str], root: str = "outputs/multirun") -> tuple[Path, Path]:
    """The selection stage, then the final stage reading its records. Returns both sweep dirs."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    dirs = {stage: Path(root) / experiment / f"{stamp}-{stage}" for stage in STAGES}
    for stage in STAGES:
        extra = [f"protocol.selection_dir={dirs['selection'].resolve()}"] if stage == "final" else []
        command = [sys.executable, "-m", "bench.cli", "-m", f"+experiment={experiment}", f"protocol.stage={stage}",
                   f"hydra.sweep.dir={dirs[stage]}", *extra, *overrides]
        print(f"slmbench-protocol: {stage} stage: {' '.join(command[2:])}", flush=True)
        subprocess.run(command, check=True)
    for stage in STAGES:
        print(f"slmbench-protocol: {stage} sweep: {dirs[stage]}")
    return dirs["selection"], dirs["final"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="slmbench-protocol", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="the selection stage, then the final stage")
    run.add_argument("experiment", help="conf/experiment/<name>.yaml, e.g. smollm2_gsm8k")
    run.add_argument("overrides", nargs="*", help="Hydra overrides for both stages (e.g. hydra/launcher=parallel)")
    show = commands.add_parser("selection", help="print each method's grid and chosen lr from a selection sweep")
    show.add_argument("selection_dir")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_stages(args.experiment, args.overrides)
        return
    records = selection_records(args.selection_dir)
    for row in selection_table(records):
        chosen = row["lr"] == best_lr(records, row["method"], args.selection_dir)
        print(f"{row['method']:>14}  lr {row['lr']:.1e}  validation accuracy {row['val_accuracy']:.4f}"
              f"{'  <- chosen' if chosen else ''}")


if __name__ == "__main__":
    main()
