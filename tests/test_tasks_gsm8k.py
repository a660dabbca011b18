"""bench/tasks/gsm8k.py on the real GSM8K files, through conf/task/gsm8k.yaml."""
from __future__ import annotations

from bench.data.batching import tokenize_examples, IGNORE_INDEX
from bench.data.prompts import PromptFormat
from bench.models.loading import load_tokenizer
from tests.conftest import HUB_TOKENIZERS, compose_config
from tests.task_helpers import GSM8K_LOCAL, build_task, no_hub  # noqa: F401 (fixture)


def test_gsm8k_rows_fields_and_targets(no_hub):
    task, _ = build_task("gsm8k", *GSM8K_LOCAL)
    train, evals = task.train_examples(), task.eval_sets()
    assert len(train) == 40 and list(evals) == ["gsm8k_test"] and len(evals["gsm8k_test"]) == 40  # tests/fixtures
    first = evals["gsm8k_test"][0]
    assert first.prompt.startswith("Question: Janet\u2019s ducks lay 16 eggs") and first.prompt.endswith("\nAnswer:")
    assert first.gold == "18"
    assert first.target.startswith(" Janet sells 16 - 3 - 4 = 9 duck eggs") and first.target.endswith("#### 18")
    assert all("<<" not in ex.target for ex in train)              # annotations stripped by default
    assert all(ex.gold and "," not in ex.gold for ex in train[:50])
    assert task.stop_strings == ("Question:",) and task.max_new_tokens == 320


def test_gsm8k_keeps_calculator_annotations_when_asked(no_hub):
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.keep_calculator_annotations=true", "task.train.limit=5")
    assert "<<16-3-4=9>>" in task.eval_sets()["gsm8k_test"][0].target


def test_gsm8k_scores_and_states_its_primary_accuracy(no_hub):
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=2", "task.eval.gsm8k_test.limit=1")
    ex = task.eval_sets()["gsm8k_test"][0]
    verdict = task.score("She makes $18.\n#### 18", ex)
    assert verdict["accuracy"] is True and verdict["flexible"] and verdict["strict"]
    verdict = task.score("#### 18\nso 19", ex)
    assert verdict["strict"] and not verdict["flexible"] and verdict["accuracy"] is False   # accuracy: flexible
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=2", "task.eval.gsm8k_test.limit=1",
                         "task.eval.gsm8k_test.accuracy=strict")
    assert task.score("#### 18\nso 19", task.eval_sets()["gsm8k_test"][0])["accuracy"] is True


@HUB_TOKENIZERS
def test_gsm8k_prompt_build_with_real_tokenizers(no_hub):
    """prompt_format=auto: the chat template for Qwen (ChatML) and Phi-4-mini, the plain prompt for
    Llama-3.2 base (no template); the target is the only loss-bearing part."""
    task, _ = build_task("gsm8k", *GSM8K_LOCAL, "task.train.limit=4", "task.eval.gsm8k_test.limit=1")
    for model, marker in (("tiny-qwen2.5", "<|im_start|>assistant\n"), ("tiny-phi4-mini", "<|assistant|>"),
                          ("tiny-llama3.2", None)):
        tokenizer = load_tokenizer(compose_config(f"model={model}").model)
        tokenized = tokenize_examples(tokenizer, task.train_examples(), max_seq_len=1024, use_chat_template=PromptFormat("auto"))
        assert len(tokenized) == 4
        ex, tok_ex = task.train_examples()[0], tokenized[0]
        n_target = sum(label != IGNORE_INDEX for label in tok_ex.labels)
        target_ids = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert tok_ex.labels[-n_target:] == target_ids and tok_ex.input_ids[-n_target:] == target_ids
        prompt = tokenizer.decode(tok_ex.input_ids[:-n_target])
        assert ex.prompt in prompt
        if marker:
            assert prompt.rstrip().endswith(marker.strip())
        else:
            assert prompt == "<|begin_of_text|>" + ex.prompt
