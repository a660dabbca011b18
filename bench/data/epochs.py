"""An endless, seeded stream of batches, planned one epoch at a time, whose position can be saved
and restored. Every batching (bench/data/batching.py, bench/data/packing.py) is one of these."""
from __future__ import annotations

import torch

from bench.data.examples import TokenizedExample


class EpochStream:
    """Epoch e's batches are `plan(e)`, a pure function of (examples, seed, e), so the position
    (epoch, batch) is all a resumed run needs to continue exactly where it stopped.

    Subclasses say how an epoch's order becomes batches (`plan`) and how one planned batch
    becomes tensors (`collate`).
    """

    # Real tokens per micro-batch over what the default batch holds on average: 1 except for
    # `packed` with `train.pack_tokens` (what `train.lr_scaling` scales by).
    tokens_ratio = 1.0

    def __init__(self, examples: list[TokenizedExample], pad_token_id: int, seed: int):
        self.examples, self.pad_token_id, self.seed = examples, pad_token_id, seed
        self.epoch, self.position = 0, 0
        self._batches = self.plan(0)
        self._first_epoch_batches = len(self._batches)

    @property
    def batches_per_epoch(self) -> int:
        """The first epoch's batch count (what a run's `train.epochs` is counted in). Fixed for
        `random` and `length_grouped`; `packed` epochs may differ by a batch or so."""
        return self._first_epoch_batches

    @property
    def batches_this_epoch(self) -> int:
        return len(self._batches)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + epoch)

    def permutation(self, generator: torch.Generator) -> list[int]:
        """The epoch's example order: the first draw of the epoch's generator, the same for every
        batching, so that they see the same order (and `random` the order it always had)."""
        return torch.randperm(len(self.examples), generator=generator).tolist()

    def plan(self, epoch: int) -> list:
        raise NotImplementedError

    def collate(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self.plan(self.epoch)
        batch = self._batches[self.position]
        self.position += 1
        return self.collate(batch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._batches = self.plan(self.epoch)
