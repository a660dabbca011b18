"""The refilling static engine (bench/eval/refill_engine.py): a slot that ends takes the next prompt,
and every prompt still gets the tokens of plain batched decoding and of HF generate (CPU, fp32)."""
from __future__ import annotations

import pytest
import torch

from bench.eval.evaluate import cut_at_stop_strings, generate_hf
from bench.eval.refill_engine import RefillGenerator
from bench.eval.static_engine import generate_static
from bench.models.tokenizer import build_arithmetic_tokenizer
from tests.test_generate import tiny_model

CPU = torch.device("cpu")
# One to 41 characters: prompts of very different lengths share the slots.
PROMPTS = ["7", "12+7=", "(4+5)*2-11=", "3-1=", "1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1=", "9=",
           "100-99+1=", "7#3=", "(((2)))", "5*5*5*5*5*5*5*5=", "0", "88-8="]


@pytest.fixture(scope="module")
def tokenizer():
    return build_arithmetic_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    model = tiny_model("llama", tokenizer)
    with torch.no_grad():  # eos wins on some rows midway, not on all: rows end at different steps
        model.lm_head.weight[tokenizer.eos_token_id] += 0.9 * model.model.norm.weight.sign()
    return model


@pytest.fixture
def prefills(monkeypatch):
    """The slots of every prefill (a wrapper around the real method)."""
    calls, prefill = [], RefillGenerator.prefill

    def recorded(self, slots, prompts):
        calls.append(list(slots))
        return prefill(self, slots, prompts)
    monkeypatch.setattr(RefillGenerator, "prefill", recorded)
    return calls


@pytest.mark.parametrize("max_new_tokens,batch_size,check_every", [(17, 4, 1), (17, 3, 5), (6, 5, 4), (1, 4, 2)])
def test_refill_gives_the_tokens_of_plain_batches_and_of_hf(tokenizer, model, prefills, max_new_tokens,
                                                             batch_size, check_every):
    hf = check_refill_against_plain_and_hf(tokenizer, model, prefills, max_new_tokens, batch_size, check_every)
    assert max(map(len, hf)) == max_new_tokens  # and some ran their whole budget


@pytest.mark.parametrize("arch", ["qwen2", "phi3"])
def test_refill_on_other_architectures(tokenizer, prefills, arch):
    model = tiny_model(arch, tokenizer)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] += 0.9 * model.model.norm.weight.sign()
    check_refill_against_plain_and_hf(tokenizer, model, prefills, max_new_tokens=12, batch_size=3, check_every=3)


def check_refill_against_plain_and_hf(tokenizer, model, prefills, max_new_tokens, batch_size, check_every):
    kwargs = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, device=CPU, precision="fp32")
    hf = generate_hf(model, tokenizer, PROMPTS, **kwargs)
    plain = generate_static(model, tokenizer, PROMPTS, **kwargs, refill=False)
    assert not prefills
    refilled = generate_static(model, tokenizer, PROMPTS, **kwargs, refill=True, check_every=check_every)
    assert refilled == plain == hf
    assert prefills[0] == list(range(batch_size)) and sum(map(len, prefills)) == len(PROMPTS)
    assert len(prefills) > 2  # slots were refilled, not a batch at a time
    if max_new_tokens > 1:  # one character a token: some rows ended at eos midway
        assert min(map(len, hf)) < max_new_tokens - 2
    return hf


def overlapping_stop_strings(texts: list[str]) -> tuple[str, int, tuple[str, str, str]]:
    """(text, i, stop strings): a short stop string completed first inside a long one that starts
    earlier, at i, in `text`; a third one that ends some other rows early, nowhere before i + 6 in `text`."""
    for text in texts:
        for i in range(len(text) - 8):
            long, short = text[i:i + 6], text[i + 2:i + 4]
            if text.find(long) != i or text.find(short) != i + 2:
                continue
            chars = set("".join(texts)) - set(text[:i + 6])
            if chars:  # the character that ends the most rows early
                third = max(sorted(chars), key=lambda char: sum(char in t[:-3] for t in texts))
                return text, i, (short, long, third)
    raise AssertionError("no overlapping stop strings in these generations")


def test_stop_strings_end_rows_early_and_cut_as_cut_at_stop_strings(tokenizer, model, prefills):
    kwargs = dict(max_new_tokens=24, batch_size=3, device=CPU, precision="fp32")
    plain = generate_static(model, tokenizer, PROMPTS, **kwargs, refill=False)
    text, i, stop_strings = overlapping_stop_strings(plain)
    # The short string is complete first, but the long one starts earlier: the cut is the long one's,
    # so the row must not end as soon as the short one shows.
    assert cut_at_stop_strings(text, stop_strings) == text[:i]
    refilled = generate_static(model, tokenizer, PROMPTS, **kwargs, stop_strings=stop_strings, check_every=2)
    assert [cut_at_stop_strings(t, stop_strings) for t in refilled] == \
           [cut_at_stop_strings(t, stop_strings) for t in plain]
    ended_early = [i for i, (r, p) in enumerate(zip(refilled, plain)) if len(r) < len(p)]
    assert len(ended_early) > 1 and all(any(s in refilled[i] for s in stop_strings) for i in ended_early)
