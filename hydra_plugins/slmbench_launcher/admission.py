"""Which job of a sweep starts next, and on which GPU: several jobs per card, admitted by free memory.

A card takes up to `jobs_per_gpu` jobs. A job starts only where the card has room for its expected
peak (the largest peak a finished run of the same method, model and task left in the store, or in
the stores named by `peaks_from`, else `expected_job_gib`; plus `memory_margin_gib` for the CUDA
context and the allocator's slack). A job that has just started holds little yet, so what the card
reports free is not what it will have: the room counted is the free memory less what the
launcher's running jobs are expected to take beyond what they hold already (their expected peaks
less the card's use above its use at launch).

The card's memory comes from a probe (`gpu_memory`): `nvidia-smi` (the real card, queried without a
CUDA context in the launcher) or `budget:<GiB>` (a card of that size that only the sweep's jobs
use: a cap on a shared card, and the CPU tests' stand-in for a GPU).
"""

import csv
import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Card:
    """One GPU as the launcher uses it: its launcher index, the CUDA_VISIBLE_DEVICES value a job
    gets (its UUID when known: an index would be renumbered under the launcher's own
    CUDA_VISIBLE_DEVICES), its UUID, and the jobs running on it (job index -> expected GiB)."""
    index: str
    visible: str
    uuid: str | None
    baseline_used_gib: float = 0.0  # what others held on the card when the sweep started
    jobs: dict[int, float] = field(default_factory=dict)


class NvidiaSmi:
    """Free and total memory of each GPU, from `nvidia-smi` (NVML underneath; no CUDA context)."""

    QUERY = ("nvidia-smi", "--query-gpu=index,uuid,memory.free,memory.total", "--format=csv,noheader,nounits")

    def _rows(self) -> list[dict[str, str]]:
        try:
            out = subprocess.run(self.QUERY, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            raise RuntimeError(f"hydra.launcher.gpu_memory=nvidia-smi: cannot read the GPUs' memory ({err}); "
                               "set hydra.launcher.gpu_memory=budget:<GiB> to admit jobs by a fixed budget") from None
        return [dict(zip(("index", "uuid", "free", "total"), (c.strip() for c in row)))
                for row in csv.reader(out.strip().splitlines()) if row]

    def cards(self, gpus: list[str]) -> list[Card]:
        """The launcher's GPU indices, as the launcher's process sees them (its own
        CUDA_VISIBLE_DEVICES, when set, names them by physical index or UUID)."""
        rows = self._rows()
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        cards = []
        for gpu in gpus:
            name = visible[int(gpu)] if visible and int(gpu) < len(visible) else gpu
            row = next((r for r in rows if name in (r["index"], r["uuid"])), None)
            if row is None:
                raise RuntimeError(f"hydra.launcher.gpus: GPU {gpu} ({name}) is not among nvidia-smi's GPUs "
                                   f"{[r['index'] for r in rows]}")
            free, total = float(row["free"]) / 1024, float(row["total"]) / 1024
            cards.append(Card(gpu, row["uuid"], row["uuid"], baseline_used_gib=total - free))
        return cards

    def free_total_gib(self, card: Card) -> tuple[float, float]:
        row = next(r for r in self._rows() if r["uuid"] == card.uuid)
        return float(row["free"]) / 1024, float(row["total"]) / 1024


class MemoryBudget:
    """A card of `gib` GiB that only the sweep's jobs use, and that holds nothing until a job's
    expected peak is counted against it (so the launcher's reservations alone decide)."""

    def __init__(self, gib: float):
        self.gib = gib

    def cards(self, gpus: list[str]) -> list[Card]:
        return [Card(gpu, gpu, None) for gpu in gpus]

    def free_total_gib(self, card: Card) -> tuple[float, float]:
        return self.gib, self.gib


def memory_probe(spec: str):
    """`hydra.launcher.gpu_memory`: nvidia-smi | budget:<GiB>."""
    if spec == "nvidia-smi":
        return NvidiaSmi()
    if spec.startswith("budget:"):
        return MemoryBudget(float(spec.split(":", 1)[1]))
    raise ValueError(f"hydra.launcher.gpu_memory={spec!r}; allowed: nvidia-smi, budget:<GiB>")


def headroom_gib(free: float, total: float, card: Card) -> float:
    """The card's free memory less what its running jobs are expected to take still."""
    held_by_jobs = max(0.0, total - free - card.baseline_used_gib)
    return free - max(0.0, sum(card.jobs.values()) - held_by_jobs)


def pick(pending: list[tuple[int, float]], cards: list[Card], probe, jobs_per_gpu: int) -> tuple[int, Card] | None:
    """(position in `pending`, card) of the next job to start, or None: the first job (in sweep
    order) that fits a card with a free slot, on the fitting card with the most room. A job larger
    than any card's room still runs on a card with none of the sweep's jobs (it may fit once
    alone; if not, its record says oom), so no job waits forever."""
    open_cards = [c for c in cards if len(c.jobs) < jobs_per_gpu]
    if not pending or not open_cards:
        return None
    room = {c.index: headroom_gib(*probe.free_total_gib(c), c) for c in open_cards}
    for position, (_, need) in enumerate(pending):
        fitting = [c for c in open_cards if room[c.index] >= need or not c.jobs]
        if fitting:
            return position, max(fitting, key=lambda c: (not c.jobs, room[c.index]))
    return None


def known_peaks_gib(*store_dirs: Path) -> dict[tuple[str, str, str], float]:
    """(method, model, task) -> the largest GPU memory (reserved, training or evaluation) a
    finished run left in the stores: what a job of the same kind is expected to need."""
    peaks: dict[tuple[str, str, str], float] = {}
    for path in (p for store_dir in store_dirs for p in Path(store_dir).glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        metrics = record.get("metrics") or {}
        peak = max((metrics.get(k) or 0.0) for k in ("peak_gpu_reserved_gib", "eval_peak_gpu_reserved_gib"))
        if record.get("status") == "ok" and peak > 0:
            key = (str(record.get("method")), str(record.get("model")), str(record.get("task")))
            peaks[key] = max(peaks.get(key, 0.0), peak)
    return peaks
