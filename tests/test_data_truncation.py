"""bench/data.tokenize_examples with `overlong=truncate` on real GSM8K rows and a real tokenizer:
a sequence whose prompt fills max_seq_len keeps no target token and is dropped, never trained on
(a batch of such sequences would give a 0/0 = NaN loss)."""
from __future__ import annotations

import logging

import pytest

from bench.data.batching import IGNORE_INDEX, build_prompt, tokenize_examples
from bench.models.loading import load_tokenizer
from tests.conftest import HUB_TOKENIZERS, compose_config
from tests.task_helpers import GSM8K_LOCAL, build_task, no_hub  # noqa: F401 (fixture)

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)


def test_truncation_never_keeps_a_sequence_without_target(no_hub, caplog):
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=20", "task.eval.gsm8k_test.limit=1")
    examples = task.train_examples()
    tokenizer = load_tokenizer(compose_config("model=tiny-qwen2.5").model)
    prompt_lengths = sorted(len(tokenizer(build_prompt(tokenizer, ex.prompt))["input_ids"]) for ex in examples)
    cut = prompt_lengths[len(prompt_lengths) // 2]   # about half the prompts alone fill the window
    with caplog.at_level(logging.WARNING, logger="bench.data.batching"):
        kept = tokenize_examples(tokenizer, examples, max_seq_len=cut, overlong="truncate")
    n_dropped = sum(length >= cut for length in prompt_lengths)
    assert len(kept) == 20 - n_dropped and 0 < n_dropped < 20
    assert all(any(label != IGNORE_INDEX for label in ex.labels[1:]) and len(ex.input_ids) <= cut for ex in kept)
    assert f"{n_dropped} truncated sequences kept no target token and were dropped" in caplog.text
    with pytest.raises(ValueError, match="no training sequence fits max_seq_len=20"):
        tokenize_examples(tokenizer, examples, max_seq_len=20, overlong="truncate")
