"""One short training + eval per real tokenizer and random-init tiny real architecture on GSM8K
rows, through bench.run.run_job (the whole pipeline, CPU, no hub)."""
from __future__ import annotations

import json

import pytest

from bench.cli import run_job
from tests.conftest import FIXTURES, HUB_TOKENIZERS, compose_config

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)

GSM8K = (f"task.train.path={FIXTURES}/gsm8k/train.jsonl", f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl",
         "task=gsm8k", "task.train.limit=8", "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=0",
         "train.max_seq_len=320", "train.overlong=drop", "eval.limit=3", "eval.sample=random",
         "eval.max_new_tokens=4", "eval.batch_size=3", "wandb.mode=disabled", "device=cpu")


@pytest.mark.parametrize("model,method", [("tiny-qwen2.5", "full"), ("tiny-llama3.2", "lora"),
                                          ("tiny-phi4-mini", "full")])
def test_short_run_per_real_architecture(model, method, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extra = ("method.r=4", "method.lora_alpha=8", "train.gradient_checkpointing=true") if method == "lora" else ()
    cfg = compose_config(f"model={model}", f"method={method}", f"cache_dir={cache_dir}", *GSM8K, *extra)
    record = run_job(cfg, tmp_path, {"method": method, "model": model, "task": "gsm8k"}, None)
    assert record["status"] == "ok"
    metrics = record["metrics"]
    assert metrics["train_steps"] == 2 and metrics["final_train_loss"] > 0
    assert metrics["eval_limit"] == 3 and metrics["eval_sample"] == "random"
    scores = metrics["accuracy_by_task"]["gsm8k_test"]
    metric_names = {"strict", "flexible", "math_verify", "accuracy"}
    assert scores["n"] == 3 and set(scores) == metric_names | {f"{m}_ci95" for m in metric_names} | {"n"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    for sample in samples:
        assert {"prompt", "generation", "gold", "extracted", "strict", "flexible", "math_verify", "accuracy"} <= set(sample)
        assert set(sample["extracted"]) == {"strict", "flexible", "math_verify"}
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["config"]["eval"]["sample_seed"] == 0 and on_disk["config"]["model"]["name"] == model
