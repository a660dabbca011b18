"""Turn task examples into token batches: loss masks, a resumable batch order (prompt formats:
bench/data/prompts.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from bench.data.prompts import PromptFormat, build_prompt
from bench.tasks.base import Example

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]


def tokenize_examples(
    tokenizer,
    examples: list[Example],
    max_seq_len: int,
    loss_on_prompt: bool = False,
    overlong: str = "drop",
    use_chat_template=PromptFormat(),
) -> list[TokenizedExample]:
    """prompt + target + eos; labels are -100 on the prompt unless `loss_on_prompt`.

    Sequences longer than `max_seq_len` are dropped (`overlong=drop`) or cut from the right
    (`overlong=truncate`; a truncated sequence left without any target token is dropped); either
    way the count is logged, never silent. `use_chat_template` is the task's prompt format
    (a bench.data.prompts.PromptFormat; the legacy values auto | True | False still work).
    """
    if overlong not in ("drop", "truncate"):
        raise ValueError(f"train.overlong={overlong!r}; allowed: drop, truncate")
    out, n_long, n_no_target = [], 0, 0
    for ex in examples:
        prompt_ids = tokenizer(build_prompt(tokenizer, ex.prompt, use_chat_template), add_special_tokens=True)["input_ids"]
        target_ids = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = prompt_ids + target_ids
        labels = (list(ids) if loss_on_prompt else [IGNORE_INDEX] * len(prompt_ids) + target_ids)
        if len(ids) > max_seq_len:
            n_long += 1
            if overlong == "drop":
                continue
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
            # A prompt longer than max_seq_len leaves no target token: such a sequence would add
            # nothing but padding, and a batch of them a 0/0 (NaN) loss. Dropped, and counted.
            if all(label == IGNORE_INDEX for label in labels[1:]):
                n_no_target += 1
                continue
        out.append(TokenizedExample(ids, labels))
    if n_long:
        log.warning("%d of %d training sequences exceed max_seq_len=%d and were %s",
                    n_long, len(examples), max_seq_len, "dropped" if overlong == "drop" else "truncated")
    if n_no_target:
        log.warning("%d truncated sequences kept no target token and were dropped", n_no_target)
    if not out:
        raise ValueError(f"no training sequence fits max_seq_len={max_seq_len}")
    return out


def collate(batch: list[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded training batch (generation uses left padding, see bench/eval/evaluate.py)."""
    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ex in enumerate(batch):
        n = len(ex.input_ids)
        input_ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class BatchStream:
    """An endless, seeded stream of shuffled batches whose position can be saved and restored.

    Each epoch is a fresh permutation drawn from `seed + epoch`, so the order depends only on
    (seed, epoch, position) — what a resumed run needs to continue exactly where it stopped.
    """

    def __init__(self, examples: list[TokenizedExample], batch_size: int, pad_token_id: int, seed: int):
        if batch_size > len(examples):
            raise ValueError(f"train.batch_size={batch_size} exceeds the {len(examples)} training examples")
        self.examples, self.batch_size, self.pad_token_id, self.seed = examples, batch_size, pad_token_id, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.examples) // self.batch_size  # the ragged tail is skipped: fixed batch shape

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.examples), generator=gen).tolist()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        start = self.position * self.batch_size
        idx = self._order[start:start + self.batch_size]
        self.position += 1
        return collate([self.examples[i] for i in idx], self.pad_token_id)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)


class RandomBatches:
    """`sample(n)`: n training examples drawn at random, for methods that probe the loss (IST).

    Its own seeded generator, so probing never shifts the training batch order.
    """

    def __init__(self, examples: list[TokenizedExample], pad_token_id: int, seed: int):
        self.examples, self.pad_token_id = examples, pad_token_id
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, n: int) -> dict[str, torch.Tensor]:
        idx = torch.randperm(len(self.examples), generator=self.generator)[:n].tolist()
        return collate([self.examples[i] for i in idx], self.pad_token_id)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
