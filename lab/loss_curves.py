"""`python -m lab loss_curves docs/perf/real_workload.json --out docs/perf/loss_curves.png`:
the training loss of the reference workload's default and fast harness rows, side by side, against
the real tokens each had trained on (the same x for both: packing changes the steps, not the data).

Each row logs every `train.log_every`-th step's loss (the default: every step; the fast path: every
10th). A step's loss is noisy (one batch), so the table beside the plot compares means over the
same quarters of the epoch, and the plot draws each row's moving mean over about 100k tokens.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = ("harness_default", "harness_fast")
QUARTERS = 4


def curves(report: dict) -> dict[str, dict]:
    """The rows that kept a loss curve: {row: {"tokens": [...], "loss": [...]}}."""
    train = report.get("train", {})
    return {name: train[name]["loss_curve"] for name in ROWS
            if train.get(name, {}).get("status") == "ok" and train[name].get("loss_curve", {}).get("loss")}


def quarter_means(curve: dict, total_tokens: float) -> list[float | None]:
    """The mean logged loss in each quarter of the epoch's tokens (None where a quarter logged none)."""
    means = []
    for q in range(QUARTERS):
        lo, hi = total_tokens * q / QUARTERS, total_tokens * (q + 1) / QUARTERS
        losses = [loss for tokens, loss in zip(curve["tokens"], curve["loss"]) if lo < tokens <= hi]
        means.append(sum(losses) / len(losses) if losses else None)
    return means


def quarter_table(report: dict) -> str:
    """Markdown: each row's mean loss per quarter of the epoch (by real tokens trained on)."""
    found = curves(report)
    if not found:
        return ""
    total = max(max(c["tokens"]) for c in found.values())
    header = ["row", "logged steps", *(f"loss, tokens {q * 25}-{(q + 1) * 25}%" for q in range(QUARTERS))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, curve in found.items():
        cells = ["n/a" if m is None else f"{m:.4f}" for m in quarter_means(curve, total)]
        lines.append("| " + " | ".join([name, str(len(curve["loss"])), *cells]) + " |")
    return "\n".join(lines)


def moving_mean(tokens: list[int], losses: list[float], window_tokens: float) -> tuple[list[int], list[float]]:
    """Each point's mean over the logged points within the `window_tokens` before it."""
    xs, ys, start = [], [], 0
    for i, t in enumerate(tokens):
        while tokens[start] < t - window_tokens:
            start += 1
        xs.append(t)
        ys.append(sum(losses[start:i + 1]) / (i + 1 - start))
    return xs, ys


def plot(report: dict, out: Path, window_tokens: float = 1e5) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = curves(report)
    if not found:
        raise SystemExit("no harness row with a loss curve in this JSON (python -m lab real_workload --parts train)")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, curve), color in zip(found.items(), ("tab:blue", "tab:orange")):
        settings = report["train"][name].get("settings", {})
        schedule = settings.get("schedule") or {}
        label = (f"{name} ({settings.get('batching')}, {len(curve['loss'])} logged steps, "
                 f"lr {schedule.get('lr', settings.get('lr')):.2e})")
        millions = [t / 1e6 for t in curve["tokens"]]
        ax.plot(millions, curve["loss"], color=color, alpha=0.25, linewidth=0.8)
        xs, ys = moving_mean(curve["tokens"], curve["loss"], window_tokens)
        ax.plot([x / 1e6 for x in xs], ys, color=color, linewidth=2, label=label)
    work = report.get("workload", {})
    ax.set_xlabel("real tokens trained on (millions)")
    ax.set_ylabel("training loss (faint: logged steps; bold: moving mean over 0.1M tokens)")
    ax.set_title(f"{work.get('model')} on {work.get('task')}, one epoch, {report.get('device')}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("json", type=Path, help="python -m lab real_workload's JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/perf/loss_curves.png"))


def main(args: argparse.Namespace, command: str) -> None:
    report = json.loads(args.json.read_text())
    print(f"wrote {plot(report, args.out)}")
    print(quarter_table(report))

