"""Stop tokens from the model's generation_config plus the tokenizer's eos: tiny-phi4-mini (the real
Phi-4-mini tokenizer, random init) ends at `<|end|>` in both eval engines."""
from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from bench.eval.evaluate import generate_hf
from bench.eval.static_engine import generate_static
from bench.eval.stop_tokens import stop_token_ids
from bench.models.loading import load_model, load_tokenizer
from tests.conftest import HUB_TOKENIZERS, compose_config

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)

CPU = torch.device("cpu")
END, ENDOFTEXT = 200020, 199999  # Phi-4-mini-instruct's `<|end|>` and `<|endoftext|>` (its eos)
# microsoft/Phi-4-mini-instruct generation_config.json on the hub (absent from ../shared/data/models)
PHI4_GENERATION_CONFIG = {"bos_token_id": 199999, "eos_token_id": [200020, 199999], "pad_token_id": 199999}
PROMPTS = ["Question: what is 2+3?\nAnswer:", "Hi", "A much longer prompt, to pad the other rows: 1, 2, 3, 4."]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def phi4():
    cfg = compose_config("model=tiny-phi4-mini").model
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, seed=0).eval()
    with torch.no_grad():  # decisive logits: greedy paths, not float near-ties, are what is compared
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    model.generation_config = GenerationConfig(**PHI4_GENERATION_CONFIG)
    return model, tokenizer


def test_stop_token_ids_take_the_generation_config_and_the_tokenizer_eos(phi4):
    model, tokenizer = phi4
    assert stop_token_ids(model, tokenizer) == [END, ENDOFTEXT]
    original = model.generation_config
    try:
        model.generation_config = GenerationConfig(eos_token_id=END)  # an int, not a list
        assert stop_token_ids(model, tokenizer) == [END, ENDOFTEXT]
        model.generation_config = GenerationConfig()  # none configured: the tokenizer's eos alone
        assert stop_token_ids(model, tokenizer) == [ENDOFTEXT]
    finally:
        model.generation_config = original


def swap_token_rows(model, a: int, b: int) -> None:
    """Exchange two token ids in the (tied) embedding and head: wherever the model would pick `a`,
    it now picks `b`, with the same logit."""
    with torch.no_grad():
        for weight in {id(w): w for w in (model.get_input_embeddings().weight,
                                          model.get_output_embeddings().weight)}.values():
            weight[[a, b]] = weight[[b, a]]


@pytest.mark.parametrize("engine", ["hf", "static"])
def test_both_engines_stop_at_end(phi4, engine):
    model, tokenizer = phi4
    kwargs = dict(max_new_tokens=8, batch_size=3, device=CPU, precision="fp32")
    free = tokenizer(PROMPTS[:1])["input_ids"][0]
    free_run = model.generate(torch.tensor([free]), max_new_tokens=8, do_sample=False,
                              eos_token_id=ENDOFTEXT, pad_token_id=ENDOFTEXT)[0, len(free):].tolist()
    third = free_run[2]
    assert END not in free_run and third not in free + free_run[:2]
    swap_token_rows(model, third, END)  # the first prompt's third new token becomes `<|end|>`
    try:
        generate = generate_hf if engine == "hf" else generate_static
        stopped = generate(model, tokenizer, PROMPTS, **kwargs)
        eos_only = generate(model, tokenizer, PROMPTS, **kwargs, stop_ids=[tokenizer.eos_token_id])
        reference = generate_hf(model, tokenizer, PROMPTS, **kwargs)
    finally:
        swap_token_rows(model, third, END)
    assert stopped[0] == tokenizer.decode(free_run[:2])  # ended at `<|end|>` (a special, not in the text)
    assert len(eos_only[0]) > len(stopped[0])  # the tokenizer's eos alone decodes past it
    assert stopped == reference
