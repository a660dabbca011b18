"""Turn task examples into token batches: prompt formatting, loss masks, a resumable batch order.

`train.batching` picks how examples become batches (`make_batch_stream`): `random` (shuffled,
right-padded), `length_grouped` (the same examples per epoch as `random`, similar lengths in one
batch) or `packed` (bench/data/packing.py: several examples per fixed-shape row).
"""
from __future__ import annotations

import logging

import torch

from bench.data.epochs import EpochStream
from bench.data.examples import IGNORE_INDEX, Example, TokenizedExample
from bench.data.packing import PackedBatches
from bench.data.prompts import PromptFormat, build_prompt

log = logging.getLogger(__name__)
BATCHINGS = ("random", "length_grouped", "packed")
OVERLONG = ("drop", "truncate")  # train.overlong
# length_grouped sorts by length within groups of this many batches of the epoch's random order:
# HF's LengthGroupedSampler default (transformers trainer_pt_utils.get_length_grouped_indices,
# mega_batch_mult = 50). Larger groups: less padding, less randomness in what shares a batch.
LENGTH_GROUP_BATCHES = 50




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
    (a bench.data.prompts.PromptFormat).
    """
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


class BatchStream(EpochStream):
    """`random`: each epoch a fresh permutation drawn from `seed + epoch`, cut into batches of
    `batch_size`; the ragged tail of the permutation is skipped (a fixed batch shape)."""

    def __init__(self, examples: list[TokenizedExample], batch_size: int, pad_token_id: int, seed: int):
        if batch_size > len(examples):
            raise ValueError(f"train.batch_size={batch_size} exceeds the {len(examples)} training examples")
        self.batch_size = batch_size
        super().__init__(examples, pad_token_id, seed)

    def kept_order(self, generator: torch.Generator) -> list[int]:
        """The epoch's permutation less its ragged tail: the examples this epoch trains on."""
        order = self.permutation(generator)
        return order[:len(order) // self.batch_size * self.batch_size]

    def plan(self, epoch: int) -> list[list[int]]:
        order = self.kept_order(self.generator(epoch))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, batch: list[int]) -> dict[str, torch.Tensor]:
        return collate([self.examples[i] for i in batch], self.pad_token_id)


class LengthGroupedBatches(BatchStream):
    """`length_grouped`: exactly the examples `random` trains on in each epoch (the same
    permutation, the same skipped tail), sorted by length within groups of LENGTH_GROUP_BATCHES
    batches and cut into batches, which are then shuffled. Less padding per batch; the batch
    count, examples per step and token weighting are those of `random`."""

    def plan(self, epoch: int) -> list[list[int]]:
        generator = self.generator(epoch)
        order = self.kept_order(generator)
        lengths = [len(ex.input_ids) for ex in self.examples]
        group = LENGTH_GROUP_BATCHES * self.batch_size
        batches = []
        for start in range(0, len(order), group):
            by_length = sorted(order[start:start + group], key=lengths.__getitem__)
            batches += [by_length[i:i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]


def make_batch_stream(examples: list[TokenizedExample], train_cfg, pad_token_id: int, seed: int) -> EpochStream:
    """The training batches as `train.batching` asks: an endless stream with `batches_per_epoch`,
    `state_dict` and `load_state_dict`."""
    batching = train_cfg.batching  # its values are checked once, at start (bench/config/checks.py)
    if batching == "packed":
        return PackedBatches(examples, pad_token_id, seed, train_cfg.batch_size, train_cfg.pack_len,
                             train_cfg.pack_tokens)
    stream = LengthGroupedBatches if batching == "length_grouped" else BatchStream
    return stream(examples, train_cfg.batch_size, pad_token_id, seed)


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
