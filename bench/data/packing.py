"""`train.batching=packed`: several examples per row, in fixed-shape micro-batches, with no
attention across examples.

Layout. Each micro-batch is `rows x train.pack_len` tokens, always the same shape (a training step
can be compiled or CUDA-graphed). Examples are laid end to end from the start of a row (first fit);
padding sits only at a row's tail.

Attention stays inside each example. The batch holds `position_ids` that restart at 0 with every
example, and no `attention_mask`. transformers 5 then builds the document mask itself: with
`attention_mask=None`, no cache and `position_ids` given, `masking_utils._preprocess_mask_arguments`
calls `find_packed_sequence_indices` (a new sequence wherever the position does not grow by 1) and
`create_causal_mask` / `create_sliding_window_causal_mask` AND the causal mask with "same sequence"
(`packed_sequence_mask_function`). That one mechanism serves the sdpa, eager and flex masks of
Llama, Qwen2 and Phi3, and flash-attention reads the same `position_ids` as variable-length
sequences. The row's padding tail restarts its positions at 0 too: a sequence of its own, never
attended to by an example. The forward must run without a cache (`use_cache=False`, as
bench/loss.py::training_loss passes): with a cache, transformers does not look for packed
sequences, and a row's examples would see each other (tests/test_batching.py shows both). Cost: in eager mode the packing check reads one boolean back from the
device per forward (`(packed_sequence_mask[:, -1] == 0).all()`); under torch.compile or CUDA-graph
capture transformers skips that check (`is_tracing`).

Loss. HF shifts labels inside the model (`ForCausalLMLoss`: position i predicts label i+1), so in a
row the first token of an example would be predicted from the previous example's last token. Its
label is set to IGNORE_INDEX: the loss-token count `(labels[:, 1:] != IGNORE_INDEX).sum()` then
equals the sum of the examples' own counts, and every example's loss equals its unpacked loss.

Optimisation. Each micro-batch holds a token budget of real tokens, by default `batch_size` times
the mean example length: what a `random` batch holds on average, so about `batch_size` examples per
micro-batch on average (more short ones, fewer long ones), about the same number of steps per
epoch, and the same token-weighted loss (each loss token counts once per window, whatever example
it sits in). `train.pack_tokens` sets another budget; then examples per step, steps per epoch and
the fitting learning rate change with it. An example joins the micro-batch while at least half of
it falls within the budget, so micro-batches hold the budget on average; an epoch covers every
example exactly once (its last micro-batch may be part empty).
"""
from __future__ import annotations

import array
import logging
import math
from dataclasses import dataclass

import torch

from bench.data.epochs import EpochStream
from bench.data.examples import IGNORE_INDEX, TokenizedExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    example: int  # index into the stream's examples
    row: int
    start: int    # the row's column where the example's first token sits


def plan_packing(order: list[int], lengths: list[int], budget: int, rows: int, pack_len: int) -> list[list[Placement]]:
    """The epoch's micro-batches: examples in `order`, each into the first row with room for it.
    A micro-batch closes when the next example would cross the budget by more than half of it,
    or fits in no row (it then opens the next micro-batch: the order is kept)."""
    batches: list[list[Placement]] = []
    current: list[Placement] = []
    used, tokens = [0] * rows, 0
    for index in order:
        n = lengths[index]
        row = next((r for r in range(rows) if used[r] + n <= pack_len), None)
        if current and (row is None or 2 * tokens + n > 2 * budget):  # tokens + n/2 > budget
            batches.append(current)
            current, used, tokens, row = [], [0] * rows, 0, 0
        current.append(Placement(index, row, used[row]))
        used[row] += n
        tokens += n
    if current:
        batches.append(current)
    return batches


def collate_packed(placements: list[Placement], examples: list[TokenizedExample], rows: int, pack_len: int,
                   pad_token_id: int) -> dict[str, torch.Tensor]:
    """`input_ids`, `position_ids` (restarting per example and for the padding tail) and `labels`
    (IGNORE_INDEX at every example's first token and on padding), each `rows x pack_len`.
    Built in flat Python lists by slice assignment, each made a tensor through one int64 buffer:
    it runs inside the training step, where per-example tensor writes (nine small torch calls an
    example, about 55 examples a 16k-token batch) cost a visible share of the host's time
    (docs/performance-analysis.md, 'Measurements behind choices in the code')."""
    size = rows * pack_len
    input_ids, labels, position_ids = [pad_token_id] * size, [IGNORE_INDEX] * size, [0] * size
    used = [0] * rows
    for p in placements:
        example = examples[p.example]
        n, offset = len(example.input_ids), p.row * pack_len + p.start
        input_ids[offset:offset + n] = example.input_ids
        labels[offset + 1:offset + n] = example.labels[1:]
        position_ids[offset:offset + n] = range(n)
        used[p.row] = max(used[p.row], p.start + n)
    for row, end in enumerate(used):
        position_ids[row * pack_len + end:(row + 1) * pack_len] = range(pack_len - end)
    # array("q") -> frombuffer: a third of torch.tensor(list)'s time; the tensor keeps its buffer alive.
    return {key: torch.frombuffer(array.array("q", values), dtype=torch.long).view(rows, pack_len)
            for key, values in (("input_ids", input_ids), ("position_ids", position_ids), ("labels", labels))}


class PackedBatches(EpochStream):
    """`packed`: each epoch the permutation `random` draws, packed by `plan_packing`; rows per
    micro-batch fixed for the run: room for the budget plus one longest example."""

    def __init__(self, examples: list[TokenizedExample], pad_token_id: int, seed: int, batch_size: int,
                 pack_len: int, pack_tokens: int | None = None):
        self.lengths = [len(ex.input_ids) for ex in examples]
        longest = max(self.lengths)
        if longest > pack_len:
            raise ValueError(f"train.pack_len={pack_len} is shorter than the longest training sequence "
                             f"({longest} tokens): every example must fit one row")
        default_budget = round(batch_size * sum(self.lengths) / len(self.lengths))
        self.budget = pack_tokens if pack_tokens is not None else default_budget
        self.default_budget, self.tokens_ratio = default_budget, self.budget / default_budget
        if self.budget <= 0:
            raise ValueError(f"train.pack_tokens must be positive, got {pack_tokens}")
        self.pack_len = pack_len
        self.rows = math.ceil((self.budget + longest) / pack_len)
        super().__init__(examples, pad_token_id, seed)
        log.info("packed batching: %d rows x %d tokens per micro-batch, %d real tokens each (budget; a "
                 "random batch of %d holds %d on average), %.1f examples per micro-batch, %d per epoch",
                 self.rows, pack_len, self.budget, batch_size, default_budget,
                 len(examples) / self.batches_per_epoch, self.batches_per_epoch)

    def plan(self, epoch: int) -> list[list[Placement]]:
        return plan_packing(self.permutation(self.generator(epoch)), self.lengths, self.budget, self.rows,
                            self.pack_len)

    def collate(self, batch: list[Placement]) -> dict[str, torch.Tensor]:
        return collate_packed(batch, self.examples, self.rows, self.pack_len, self.pad_token_id)
