"""bench/data/prompts.py: one explicit prompt format for every model of a sweep, real tokenizers
(Qwen2.5 base ships ChatML with a default system prompt, Llama-3.2 base no template at all)."""
from __future__ import annotations

import json

import pytest

from bench.config.checks import check
from bench.errors import ConfigError
from bench.data.prompts import PromptFormat, build_prompt, prompt_record, template_system_prompt
from bench.models.loading import load_tokenizer
from tests.conftest import FIXTURES, HUB_TOKENIZERS, compose_config, run_cli
from tests.task_helpers import GSM8K_LOCAL, build_task

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)

QUESTION = "Question: 2+2?\nAnswer:"
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."  # Qwen2.5-0.5B tokenizer_config.json chat_template


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tokenizer_of(model: str):
    return load_tokenizer(compose_config(f"model={model}").model)


@pytest.mark.parametrize("model", ["tiny-qwen2.5", "tiny-llama3.2", "tiny-phi4-mini"])
def test_plain_is_the_task_text_for_every_model(model):
    assert build_prompt(tokenizer_of(model), QUESTION, PromptFormat("plain")) == QUESTION


def test_chat_is_each_models_own_template():
    qwen, phi = tokenizer_of("tiny-qwen2.5"), tokenizer_of("tiny-phi4-mini")
    assert build_prompt(qwen, QUESTION, PromptFormat("chat")) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert build_prompt(phi, QUESTION, PromptFormat("chat")) == f"<|user|>{QUESTION}<|end|><|assistant|>"
    assert build_prompt(phi, QUESTION, PromptFormat("chat", "Be brief.")) == (
        f"<|system|>Be brief.<|end|><|user|>{QUESTION}<|end|><|assistant|>")


def test_chat_on_a_model_without_template_names_the_model_and_the_key():
    llama = tokenizer_of("tiny-llama3.2")
    with pytest.raises(ValueError, match=r"task.prompt_format=chat.*meta-llama__Llama-3.2-1B.*no chat template"):
        build_prompt(llama, QUESTION, PromptFormat("chat"))
    assert build_prompt(llama, QUESTION, PromptFormat("auto")) == QUESTION  # only where a user asks


def test_the_templates_own_system_prompt_is_found_and_recorded():
    qwen, phi = tokenizer_of("tiny-qwen2.5"), tokenizer_of("tiny-phi4-mini")
    assert template_system_prompt(qwen) == QWEN_DEFAULT_SYSTEM
    assert template_system_prompt(phi) is None
    # An empty system prompt of ours replaces Qwen's default.
    assert build_prompt(qwen, QUESTION, PromptFormat("chat", "")).startswith("<|im_start|>system\n<|im_end|>\n")
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.prompt_format=chat", "task.train.limit=20",
                         "task.eval.gsm8k_test.limit=5")
    assert prompt_record(task, qwen) == {
        "prompt_format": "chat", "prompt_format_used": "chat", "system_prompt": None,
        "template_system_prompt": QWEN_DEFAULT_SYSTEM, "num_fewshot": 0, "fewshot_seed": 1234, "fewshot_ids": []}
    assert prompt_record(task, phi)["template_system_prompt"] is None


def test_an_unknown_prompt_format_is_a_config_error():
    cfg = compose_config("task=gsm8k", "task.prompt_format=chatml")
    with pytest.raises(ConfigError, match=r"task.prompt_format='chatml'; allowed: plain, chat, auto"):
        check(cfg)


def test_a_sweep_gets_one_format_for_every_model(tmp_path):
    """Real Hydra multirun: plain gives plain prompts for both models; chat gives Qwen its ChatML
    and stops the Llama-3.2 base run with an error naming the model and the key."""
    sweep = tmp_path / "sweep"
    run_cli(tmp_path, "-m", "method=full", "seed=0", "model=tiny-qwen2.5,tiny-llama3.2", "task=gsm8k", "task.prompt_format=plain,chat",
            *GSM8K_LOCAL, "task.train.limit=8", "train.batch_size=4", "train.max_steps=2", "eval.limit=3",
            "eval.max_new_tokens=4", "wandb.mode=disabled", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.job.num}-${hydra.runtime.choices.model}-${task.prompt_format}",
            check=False)
    questions = [json.loads(line)["question"] for line in
                 (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    plain = {f"Question: {q}\nAnswer:" for q in questions}
    runs = {p.parent.name.split("-", 1)[1]: p.parent for p in sweep.glob("*/result.json")}
    assert sorted(runs) == ["tiny-llama3.2-chat", "tiny-llama3.2-plain", "tiny-qwen2.5-chat", "tiny-qwen2.5-plain"]

    def prompts(run: str) -> set[str]:
        return {json.loads(line)["prompt"] for line in (runs[run] / "samples.jsonl").read_text().splitlines()}

    assert prompts("tiny-qwen2.5-plain") == prompts("tiny-llama3.2-plain") == plain
    assert prompts("tiny-qwen2.5-chat") == {
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n"
        "<|im_start|>assistant\n" for p in plain}
    failed = json.loads((runs["tiny-llama3.2-chat"] / "result.json").read_text())
    assert failed["status"] == "failed"
    assert "task.prompt_format=chat" in failed["error"]["message"]
    assert "Llama-3.2-1B" in failed["error"]["message"]
