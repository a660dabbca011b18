"""`python -m lab <command>`: the benchmark lab's one entry.

The lab measures the harness (bench/, the product) from outside: every row is a run built by
`bench.run.recipe.Run` from the product's own configs, observed through `Run.train(observers=...)`.
It runs from a checkout and is not shipped with the wheel (pyproject.toml's packages leave it out).

    python -m lab shapes ...         the harness against a plain PyTorch loop on real model shapes, and eval throughput
    python -m lab real_workload ...  the reference workload (SmolLM2-135M on GSM8K) as users run it
    python -m lab memory ...         where a training step's peak GPU memory goes
    python -m lab report ...         docs/performance.md from the JSON the commands above wrote
    python -m lab loss_curves ...    the default and fast rows' loss curves from real_workload's JSON
    python -m lab sweep_throughput ... the same sweep serially and packed several jobs per GPU
"""
from __future__ import annotations

import argparse
import sys

from lab import loss_curves, memory, real_workload, report, shapes, sweep_throughput

COMMANDS = {"shapes": shapes, "real_workload": real_workload, "memory": memory, "report": report,
            "loss_curves": loss_curves, "sweep_throughput": sweep_throughput}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        summary = module.__doc__.split("\n\n")[0]
        module.add_arguments(commands.add_parser(name, help=summary, description=summary))
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`argv` after `python -m lab` (the command first); the namespace holds the command's options
    only, plus `command` (its name)."""
    args = parser().parse_args(argv)
    module = COMMANDS[args.command]
    return module.finish_args(args) if hasattr(module, "finish_args") else args


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = vars(args).pop("command")
    return COMMANDS[command].main(args, "python -m lab " + " ".join(argv))
