"""`train.batching`: packed rows keep attention inside each example (per-example logits and losses
equal the unpacked ones), length_grouped trains on random's examples, every stream resumes exactly,
and a packed epoch covers every example once. Tiny models of the project's configs, CPU, fp32."""
from __future__ import annotations

import functools
import random

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from bench.config.checks import check
from bench.errors import ConfigError
from bench.data.batching import (IGNORE_INDEX, BATCHINGS, BatchStream, LengthGroupedBatches, TokenizedExample,
                                 collate, make_batch_stream)
from bench.data.packing import PackedBatches, collate_packed
from bench.loss import training_loss
from bench.models.loading import build_tiny
from bench.models.tokenizer import build_arithmetic_tokenizer
from tests.conftest import compose_config

TOKENIZER = build_arithmetic_tokenizer()
PAD = TOKENIZER.pad_token_id
ARCHS = ("llama", "qwen2", "phi3")


def make_examples(n: int = 60, seed: int = 0, shortest: int = 4, longest: int = 24) -> list[TokenizedExample]:
    """Distinct random sequences (no pad token). Every other one has loss on its first token too
    (as `loss_on_prompt=true` gives), so packing must mask that label itself; the rest mask a prompt."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        ids = tuple(rng.randrange(3, len(TOKENIZER)) for _ in range(rng.randrange(shortest, longest + 1)))
        if ids in seen:
            continue
        seen.add(ids)
        prompt = 0 if len(out) % 2 else rng.randrange(1, len(ids) - 1)
        out.append(TokenizedExample(list(ids), [IGNORE_INDEX] * prompt + list(ids[prompt:])))
    return out


@functools.cache
def model_config(arch: str):
    return compose_config(f"model=tiny-{arch}").model


def tiny_model(arch: str, attention: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_tiny(model_config(arch), TOKENIZER).eval()  # random init: no base pretraining needed
    model.set_attn_implementation(attention)
    return model


def packed_batch(examples, batch_size: int = 6, pack_len: int = 64):
    """The first packed micro-batch of epoch 0 and where each example sits in it."""
    stream = PackedBatches(examples, PAD, seed=0, batch_size=batch_size, pack_len=pack_len)
    placements = stream.plan(0)[0]
    rows_used = [p.row for p in placements]
    assert max(rows_used.count(r) for r in set(rows_used)) >= 3  # several examples share a row
    return collate_packed(placements, examples, stream.rows, pack_len, PAD), placements


def unpacked(example: TokenizedExample) -> dict[str, torch.Tensor]:
    return collate([example], PAD)


def each_alone(model, examples, placements) -> torch.Tensor:
    """The examples' logits unpacked: one example per right-padded row (the `random` layout)."""
    with torch.no_grad():
        return model(**collate([examples[p.example] for p in placements], PAD), use_cache=False).logits


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_logits_equal_each_example_alone(arch, attention):
    model, examples = tiny_model(arch, attention), make_examples()
    batch, placements = packed_batch(examples)
    assert "attention_mask" not in batch  # the document mask comes from position_ids
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    alone = each_alone(model, examples, placements)
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits
        # The controls: one causal mask over the whole row lets examples see each other. That is
        # what a forward without position ids gets, and one with a cache: transformers looks for
        # packed sequences only when there is none (training_loss passes use_cache=False).
        controls = [model(input_ids=batch["input_ids"], use_cache=False).logits, model(**inputs, use_cache=True).logits]
    crossed = [0, 0]
    for i, p in enumerate(placements):
        n = len(examples[p.example].input_ids)
        got = packed[p.row, p.start:p.start + n]
        assert torch.allclose(got, alone[i, :n], atol=1e-5, rtol=0), (p, (got - alone[i, :n]).abs().max())
        for c, control in enumerate(controls):
            crossed[c] += not torch.allclose(control[p.row, p.start:p.start + n], alone[i, :n], atol=1e-3)
    assert min(crossed) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_per_example_loss_and_token_count_equal_unpacked(arch):
    model, examples = tiny_model(arch), make_examples()
    batch, placements = packed_batch(examples)
    loss_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert loss_tokens == sum(int((unpacked(examples[p.example])["labels"][:, 1:] != IGNORE_INDEX).sum())
                              for p in placements)
    alone = each_alone(model, examples, placements)
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits
    for i, p in enumerate(placements):
        labels = torch.tensor(examples[p.example].labels)
        n = len(labels)
        packed_loss = F.cross_entropy(packed[p.row, p.start:p.start + n - 1],
                                      batch["labels"][p.row, p.start + 1:p.start + n])
        alone_loss = F.cross_entropy(alone[i, :n - 1], labels[1:])  # HF's shift: position i predicts label i+1
        assert torch.allclose(packed_loss, alone_loss, atol=1e-5, rtol=0), p


@pytest.mark.parametrize("fast_path", ["none", "chunked_ce"])
def test_training_loss_forwards_position_ids_on_both_loss_paths(fast_path):
    model, examples = tiny_model("llama"), make_examples()
    batch, placements = packed_batch(examples)
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    with torch.no_grad():
        packed = training_loss(model, batch, n, fast_path)
        alone = sum(training_loss(model, unpacked(examples[p.example]), n, fast_path) for p in placements)
        without_positions = training_loss(model, {k: v for k, v in batch.items() if k != "position_ids"}, n, fast_path)
    assert torch.allclose(packed, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(without_positions, alone, atol=1e-3)


def example_multiset(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """The examples of a batch, read back from its tensors: padded rows by their attention mask,
    packed rows split where the position ids restart (all-pad segments are the padding tail)."""
    if "attention_mask" in batch:
        return [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    out = []
    for ids, positions in zip(batch["input_ids"], batch["position_ids"]):
        starts = (positions == 0).nonzero().flatten().tolist() + [len(ids)]
        segments = [ids[a:b].tolist() for a, b in zip(starts, starts[1:])]
        out += [tuple(s) for s in segments if any(token != PAD for token in s)]
    return out


def epoch_batches(stream) -> list[dict[str, torch.Tensor]]:
    """The next epoch's batches (the stream stands at an epoch's start or end)."""
    batches = [next(stream)]
    epoch = stream.epoch
    while stream.position < stream.batches_this_epoch:
        batches.append(next(stream))
    assert stream.epoch == epoch and stream.position == len(batches)
    return batches


def test_length_grouped_trains_on_exactly_randoms_examples_per_epoch():
    examples = make_examples(n=103)  # 25 batches of 4 and a ragged tail of 3, skipped by both
    plain, grouped = BatchStream(examples, 4, PAD, seed=5), LengthGroupedBatches(examples, 4, PAD, seed=5)
    assert plain.batches_per_epoch == grouped.batches_per_epoch == 25
    for _ in range(3):  # epochs 0, 1, 2: each skips a different tail
        plain_batches, grouped_batches = epoch_batches(plain), epoch_batches(grouped)
        assert sorted(e for b in plain_batches for e in example_multiset(b)) == \
            sorted(e for b in grouped_batches for e in example_multiset(b))
        padding = [sum(int((b["attention_mask"] == 0).sum()) for b in batches)
                   for batches in (plain_batches, grouped_batches)]
        assert padding[1] < padding[0] / 3
        widths = [b["input_ids"].shape[1] for b in grouped_batches]
        assert widths != sorted(widths) and widths != sorted(widths, reverse=True)  # batches shuffled


def train_cfg(batching: str, *overrides: str):
    cfg = compose_config(f"train.batching={batching}", "train.batch_size=4", "train.max_seq_len=32", *overrides)
    check(cfg)
    return cfg.train


@pytest.mark.parametrize("batching", BATCHINGS)
def test_streams_resume_exactly_where_they_stopped(batching):
    examples, cfg = make_examples(n=41), train_cfg(batching)
    first = make_batch_stream(examples, cfg, PAD, seed=3)
    for _ in range(first.batches_per_epoch + 3):  # into the second epoch
        next(first)
    resumed = make_batch_stream(examples, cfg, PAD, seed=3)
    resumed.load_state_dict(first.state_dict())
    for _ in range(2 * first.batches_per_epoch):  # and across the next epoch boundary
        a, b = next(first), next(resumed)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("pack_tokens", ["null", "150"])
def test_a_packed_epoch_covers_every_example_once_in_fixed_shapes(pack_tokens):
    examples, cfg = make_examples(n=200), train_cfg("packed", f"train.pack_tokens={pack_tokens}")
    stream = make_batch_stream(examples, cfg, PAD, seed=0)
    lengths = [len(ex.input_ids) for ex in examples]
    budget = 4 * sum(lengths) / len(lengths) if pack_tokens == "null" else 150
    assert stream.budget == round(budget) and stream.rows * cfg.pack_len >= budget + max(lengths)
    for epoch in range(2):
        batches = epoch_batches(stream)
        assert sorted(e for b in batches for e in example_multiset(b)) == sorted(tuple(ex.input_ids) for ex in examples)
        assert {tuple(b["input_ids"].shape) for b in batches} == {(stream.rows, cfg.pack_len)}
        real_tokens = [int((b["input_ids"] != PAD).sum()) for b in batches]
        assert max(real_tokens) <= budget + max(lengths) / 2
        # the budget holds on average (the last micro-batch takes the epoch's remainder)
        assert abs(sum(real_tokens[:-1]) / len(real_tokens[:-1]) - budget) < 0.05 * budget
        if pack_tokens == "null":  # about batch_size examples per micro-batch, as random has
            assert abs(len(examples) / len(batches) - 4) < 0.2


def test_batching_keys_are_checked():
    with pytest.raises(ConfigError, match=r"train.batching='bucketed'; allowed: random, length_grouped, packed"):
        check(compose_config("train.batching=bucketed"))
    with pytest.raises(ConfigError, match="train.pack_len=16 must be at least train.max_seq_len=32"):
        check(compose_config("train.batching=packed", "train.max_seq_len=32", "train.pack_len=16"))
    with pytest.raises(ValueError, match="train.pack_len=10 is shorter than the longest training sequence"):
        PackedBatches(make_examples(n=10), PAD, seed=0, batch_size=2, pack_len=10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_logits_equal_each_example_alone_on_cuda_sdpa(arch):
    torch.backends.cuda.matmul.allow_tf32 = False
    model, examples = tiny_model(arch, "sdpa").cuda(), make_examples()
    batch, placements = packed_batch(examples)
    with torch.no_grad():
        packed = model(**{k: v.cuda() for k, v in batch.items()}, use_cache=False).logits
        for p in placements:
            n = len(examples[p.example].input_ids)
            alone = model(**{k: v.cuda() for k, v in unpacked(examples[p.example]).items()}, use_cache=False).logits[0]
            assert torch.allclose(packed[p.row, p.start:p.start + n], alone, atol=1e-4, rtol=0), p


def test_position_ids_reach_the_model_through_peft():
    """LoRA adapters (not zero-initialised) on both loss paths: the packed loss is the padded one."""
    base, examples = tiny_model("qwen2"), make_examples()
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    batch, placements = packed_batch(examples)
    n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    with torch.no_grad():
        for fast_path in ("none", "chunked_ce"):
            packed = training_loss(model, batch, n, fast_path)
            alone = training_loss(model, collate([examples[p.example] for p in placements], PAD), n, fast_path)
            assert torch.allclose(packed, alone, atol=1e-5, rtol=0), fast_path
