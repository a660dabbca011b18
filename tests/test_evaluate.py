"""bench/evaluate: `eval.limit` as the first N or a seeded sample; `eval.engine`: the static
engine gives the same samples as HF generate through `evaluate`, bad values are refused."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bench.config.checks import check
from bench.data.examples import Example
from bench.errors import ConfigError
from bench.eval.evaluate import evaluate, limit_examples
from bench.models.loading import build_tiny
from bench.models.tokenizer import build_arithmetic_tokenizer
from bench.tasks.arithmetic import ArithmeticTask
from tests.conftest import compose_config

EXAMPLES = [Example(id=str(i), prompt=f"q{i}", target="t", gold="g") for i in range(100)]


def ids(examples):
    return [int(ex.id) for ex in examples]


def test_no_limit_and_first_n():
    assert limit_examples(EXAMPLES, None) == EXAMPLES
    assert ids(limit_examples(EXAMPLES, 3)) == [0, 1, 2]


def test_seeded_sample_is_reproducible_ordered_and_seed_dependent():
    a = ids(limit_examples(EXAMPLES, 10, "random", seed=0))
    assert a == ids(limit_examples(EXAMPLES, 10, "random", seed=0))
    assert a == sorted(a) and len(set(a)) == 10 and a != list(range(10))
    assert a != ids(limit_examples(EXAMPLES, 10, "random", seed=1))
    assert ids(limit_examples(EXAMPLES, 500, "random", seed=0)) == list(range(100))


def test_bad_values():
    with pytest.raises(ValueError, match="eval.limit must be positive"):
        limit_examples(EXAMPLES, 0)
    with pytest.raises(ConfigError, match=r"eval.sample='some'; allowed: first, random"):
        check(compose_config("eval.sample=some"))

CPU = torch.device("cpu")


def test_static_engine_gives_the_same_samples_as_hf_through_evaluate():
    tokenizer = build_arithmetic_tokenizer()
    torch.manual_seed(0)
    model = build_tiny(OmegaConf.create({"arch": "qwen2", "dims": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64}}), tokenizer)
    task = ArithmeticTask(name="t", operators=["+"], operand_max=9, eval_fraction=0.2, n_eval=None, seed=0,
                          validation_size=0, validation_seed=0)
    task.stop_strings = ("==",)  # the untrained model writes "====...": refilled rows end there
    results, info = {}, {}
    for engine, refill in (("hf", None), ("static", False), ("static", True)):
        eval_cfg = OmegaConf.create({"split": "test", "max_new_tokens": 6, "batch_size": 5, "limit": 12, "sample": "first",
                                     "sample_seed": 0, "engine": engine, "refill": refill, "check_every": 1,
                                     "cuda_graphs": True})
        results[engine, refill] = evaluate(model, tokenizer, task, eval_cfg, CPU, "fp32", task.use_chat_template,
                                           info=info)
    assert results["static", True] == results["static", False] == results["hf", None]
    assert {s["generation"] for s in results["hf", None][1]} == {""}  # cut at the stop string
    assert info == {"eval_stop_token_ids": [tokenizer.eos_token_id]}  # for result.json
    assert len(results["hf", None][1]) == 12 * len(task.eval_sets())


def test_bad_engine_and_fast_path_values_are_refused():
    with pytest.raises(ConfigError, match="eval.engine='vllm'; allowed: hf, static"):
        check(compose_config("eval.engine=vllm"))
    with pytest.raises(ConfigError, match="eval.check_every must be positive and finite, got 0"):
        check(compose_config("eval.check_every=0"))
    with pytest.raises(ConfigError, match="train.fast_path='fused'; allowed: none, chunked_ce"):
        check(compose_config("train.fast_path=fused"))
