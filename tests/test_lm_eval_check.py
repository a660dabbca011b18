"""The lm-evaluation-harness cross-check agrees with our evaluator question by question."""
from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.eval.evaluate import evaluate
from bench.eval.lm_eval_check import CHECK_FILE, cross_check, eval_set_kind
from bench.models.loading import load_model, load_tokenizer
from bench.models.saving import save_model, weights_origin
from bench.run.base_model import load_or_build_base
from bench.run.recipe import Run
from methods.base import MethodContext
from methods.lora import LoRA
from tests.conftest import FIXTURES, HUB_TOKENIZERS, compose_config

pytest.importorskip("lm_eval")


def kept_run(run_dir, cache_dir):
    """A run dir as `train.save_model=true` leaves it: result.json's config, samples.jsonl from our
    evaluator, and the adapter in model/. Operators + (pretrained) and # (not) give both verdicts."""
    cfg = compose_config(f"cache_dir={cache_dir}", "method=lora", "task.operators=['+','#']", "eval.limit=24",
                         "eval.batch_size=8")
    tokenizer = load_tokenizer(cfg.model)
    base = load_or_build_base(cfg, tokenizer, Run.build)
    origin = weights_origin(base)
    model = LoRA(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], use_rslora=False).prepare(
        base, MethodContext(device=torch.device("cpu"), total_steps=1, steps_per_epoch=1,
                            gradient_checkpointing=False, seed=0))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.02)
    task = instantiate(cfg.task)
    accuracy, samples = evaluate(model, tokenizer, task, cfg.eval, torch.device("cpu"), "fp32", task.use_chat_template)
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run_dir / "result.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True)}))
    save_model(model, tokenizer, run_dir / "model", origin)
    return accuracy["arithmetic"]["exact_match"]


def test_cross_check_agrees_on_every_question(cache_dir, tmp_path):
    ours = kept_run(tmp_path / "run", cache_dir)
    assert 0 < ours < 1  # both verdicts occur, so agreement is not trivially all-true or all-false

    report = cross_check(tmp_path / "run")

    checked = report["eval_sets"]["arithmetic"]
    assert checked["n"] == 24 and checked["kind"] == "arithmetic"
    assert checked["same_prompt"] == 1.0 and checked["same_generation"] == 1.0
    assert checked["agreement"] == 1.0 and checked["disagreements"] == []
    assert checked["ours_accuracy"] == checked["lm_eval_accuracy"] == ours
    assert json.loads((tmp_path / "run" / CHECK_FILE).read_text())["agreement"] == 1.0
    filled = (tmp_path / "run" / "lm_eval_check" / "slmbench_arithmetic_arithmetic.yaml").read_text()
    assert "dataset_path: json" in filled and "max_gen_toks: 6" in filled


def test_eval_sets_lm_eval_cannot_score_are_refused():
    math_sample = {"eval_set": "math500", "id": "1", "prompt": "p", "generation": "g", "gold": "1",
                   "extracted": {}, "math_verify": True, "exact_match": False}
    with pytest.raises(ValueError, match="math500.*no cross-checkable kind"):
        eval_set_kind(math_sample)
    assert eval_set_kind({"eval_set": "gsm8k_test", "id": "1", "prompt": "p", "generation": "g", "gold": "1",
                          "extracted": {}, "strict": True, "flexible": True, "math_verify": True}) == "gsm8k"


@HUB_TOKENIZERS
def test_gsm8k_cross_check_sends_lm_eval_our_chat_prompts(tmp_path):
    """The real Qwen2.5 tokenizer and chat template, the local GSM8K test file, lm-eval's gsm8k
    filters: lm-eval sees the very prompts the run scored (a random-init tiny model: every verdict
    is false, so this checks the format, not the agreement)."""
    data = FIXTURES / "gsm8k"
    cfg = compose_config("model=tiny-qwen2.5", "task=gsm8k", "task.prompt_format=chat", f"task.train.path={data / 'train.jsonl'}",
                         "task.train.limit=8", f"task.eval.gsm8k_test.path={data / 'test.jsonl'}", "eval.limit=3",
                         "eval.max_new_tokens=8")
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, seed=0)
    task = instantiate(cfg.task)
    _, samples = evaluate(model, tokenizer, task, cfg.eval, torch.device("cpu"), "fp32", task.use_chat_template)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (run_dir / "result.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True)}))
    save_model(model, tokenizer, run_dir / "model", None)

    checked = cross_check(run_dir)["eval_sets"]["gsm8k_test"]

    assert samples[0]["prompt"].startswith("<|im_start|>system")  # Qwen2.5's ChatML, as the run used it
    assert checked["kind"] == "gsm8k" and checked["n"] == 3 and checked["same_prompt"] == 1.0
    assert checked["same_generation"] == 1.0 and checked["agreement"] == 1.0
