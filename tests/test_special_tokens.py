"""bench/models/loading.py: bos, eos and pad pinned in each model yaml (as the authors publish them),
checked against what the real tokenizer loaded: a difference is fixed with a warning naming both,
or refused (`model.specials_mismatch=error`); never used silently."""
from __future__ import annotations

import logging

import pytest

from bench.config.checks import check
from bench.errors import ConfigError
from bench.models.loading import load_tokenizer
from tests.conftest import HUB_TOKENIZERS, compose_config


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("model,bos,eos,pad", [
    ("tiny-qwen2.5", None, "<|endoftext|>", "<|endoftext|>"),
    ("tiny-llama3.2", "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"),
    ("tiny-phi4-mini", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
])
@HUB_TOKENIZERS
def test_published_specials_load_without_a_warning(model, bos, eos, pad, caplog):
    with caplog.at_level(logging.WARNING, logger="bench.models.loading"):
        tokenizer = load_tokenizer(compose_config(f"model={model}").model)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (bos, eos, pad)
    assert not caplog.records


@HUB_TOKENIZERS
def test_a_pinned_eos_that_differs_is_fixed_with_a_warning_naming_both(caplog):
    cfg = compose_config("model=tiny-qwen2.5", "model.special_tokens.eos='<|im_end|>'").model
    with caplog.at_level(logging.WARNING, logger="bench.models.loading"):
        tokenizer = load_tokenizer(cfg)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    [warning] = caplog.records
    assert "model.special_tokens.eos" in warning.getMessage()
    assert "'<|endoftext|>'" in warning.getMessage() and "'<|im_end|>'" in warning.getMessage()


@HUB_TOKENIZERS
def test_a_pinned_eos_that_differs_is_refused_with_error():
    cfg = compose_config("model=tiny-qwen2.5", "model.special_tokens.eos='<|im_end|>'",
                         "model.specials_mismatch=error").model
    with pytest.raises(ValueError, match=r"model.special_tokens.eos: the tokenizer of tiny-qwen2.5 loaded "
                                         r"'<\|endoftext\|>', but the model's authors publish '<\|im_end\|>'"):
        load_tokenizer(cfg)


@HUB_TOKENIZERS
def test_a_pinned_none_removes_a_loaded_token(caplog):
    cfg = compose_config("model=tiny-llama3.2", "model.special_tokens.bos=null").model
    with caplog.at_level(logging.WARNING, logger="bench.models.loading"):
        tokenizer = load_tokenizer(cfg)
    assert tokenizer.bos_token is None
    assert "'<|begin_of_text|>'" in caplog.records[0].getMessage()


def test_an_unknown_mismatch_policy_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.specials_mismatch='ignore'; allowed: fix, error"):
        check(compose_config("model=tiny-qwen2.5", "model.specials_mismatch=ignore"))
