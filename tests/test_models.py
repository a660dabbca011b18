"""bench/models/loading.py: real tokenizers (pad tokens, left padding), local paths that never reach the hub,
random-init real shapes, tiny versions of the real architectures."""
from __future__ import annotations

import pytest
import torch

from bench.models.loading import load_model, load_tokenizer, unique_parameters
from tests.conftest import HUB_TOKENIZERS, SHARED_DATA, compose_config

pytestmark = HUB_TOKENIZERS  # every test loads a hub model's tokenizer (the assets folder)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("model,pad,pad_id,chat", [
    ("tiny-qwen2.5", "<|endoftext|>", 151643, True),
    ("tiny-llama3.2", "<|finetune_right_pad_id|>", 128004, False),  # Llama-3.2 has none: ours
    ("tiny-phi4-mini", "<|endoftext|>", 199999, True),
])
def test_real_tokenizers_pad_and_padding_side(model, pad, pad_id, chat):
    tokenizer = load_tokenizer(compose_config(f"model={model}").model)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == (pad, pad_id)
    assert tokenizer.padding_side == "left"
    assert (tokenizer.chat_template is not None) == chat
    batch = tokenizer(["a", "a much longer text"], padding=True)
    assert batch["input_ids"][0][0] == pad_id and batch["attention_mask"][0][0] == 0  # left-padded


def test_pad_token_must_exist():
    cfg = compose_config("model=tiny-llama3.2", "model.special_tokens.pad='<|no_such_token|>'").model
    with pytest.raises(ValueError, match=r"model.special_tokens.pad='<\|no_such_token\|>' is not a token"):
        load_tokenizer(cfg)


def test_missing_local_path_is_an_error_not_a_hub_request(tmp_path, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("hub access attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    cfg = compose_config("model=qwen2.5-0.5b", f"model.path={tmp_path}/missing").model
    with pytest.raises(FileNotFoundError, match=r"model\.path=.*missing.*does not exist"):
        load_tokenizer(cfg)
    cfg = compose_config("model=tiny-qwen2.5", "model.tokenizer=no/such/dir").model
    with pytest.raises(FileNotFoundError, match=r"model\.tokenizer='no/such/dir'"):
        load_tokenizer(cfg)


@pytest.mark.parametrize("model,cls", [("tiny-qwen2.5", "Qwen2ForCausalLM"), ("tiny-llama3.2", "LlamaForCausalLM"),
                                       ("tiny-phi4-mini", "Phi3ForCausalLM")])
def test_tiny_real_architectures(model, cls):
    cfg = compose_config(f"model={model}").model
    tokenizer = load_tokenizer(cfg)
    m = load_model(cfg, tokenizer, seed=0)
    assert type(m).__name__ == cls and m.config.num_hidden_layers == 2
    assert m.config.vocab_size >= len(tokenizer) and m.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(["Question: 1+1?\nAnswer:", "Hi"], return_tensors="pt", padding=True)
    out = m(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    # Same seed, same weights: random init is reproducible.
    again = load_model(cfg, tokenizer, seed=0)
    assert torch.equal(m.get_input_embeddings().weight, again.get_input_embeddings().weight)


def test_real_shape_random_init_qwen():
    """Qwen2.5-0.5B at its real shape (494M parameters), built from config.json without weights."""
    cfg = compose_config("model=qwen2.5-0.5b", f"model.path={SHARED_DATA}/models/Qwen__Qwen2.5-0.5B",
                         "model.init=random").model
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, seed=0)
    n_params = sum(p.numel() for p in unique_parameters(model.parameters()))
    assert n_params == 494_032_768 and model.config.num_hidden_layers == 24
    with torch.no_grad():
        logits = model(**tokenizer(["Question: 2+2?"], return_tensors="pt")).logits
    assert logits.shape[-1] == 151_936 and torch.isfinite(logits).all()


def test_dims_need_random_init_and_known_fields():
    cfg = compose_config("model=tiny-qwen2.5", "model.init=pretrained").model
    with pytest.raises(ValueError, match="model.dims overrides the shape, so it needs model.init=random"):
        load_model(cfg, load_tokenizer(cfg), seed=0)
    cfg = compose_config("model=tiny-qwen2.5", "+model.dims.hidden_sise=8").model
    with pytest.raises(ValueError, match=r"model.dims.hidden_sise: Qwen2Config has no such field"):
        load_model(cfg, load_tokenizer(cfg), seed=0)


def test_random_init_builds_on_the_given_device():
    """`init=random` draws the weights where the run trains (`device`): here the meta device, so
    Phi-4-mini's real shape is built with no memory; without `device`, on the host."""
    cfg = compose_config("model=phi4-mini", f"model.path={SHARED_DATA}/models/microsoft__Phi-4-mini-instruct",
                         "model.init=random").model
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer, seed=0, device=torch.device("meta"))
    params = list(unique_parameters(model.parameters()))
    assert {p.device.type for p in params} == {"meta"}
    assert sum(p.numel() for p in params) == 3_836_021_760 and model.config.num_hidden_layers == 32
    tiny = compose_config("model=qwen2.5-0.5b", f"model.path={SHARED_DATA}/models/Qwen__Qwen2.5-0.5B",
                          "model.init=random", "+model.dims.num_hidden_layers=1", "+model.dims.hidden_size=64",
                          "+model.dims.intermediate_size=64", "+model.dims.num_attention_heads=2",
                          "+model.dims.num_key_value_heads=1").model
    assert {p.device.type for p in load_model(tiny, load_tokenizer(tiny), seed=0).parameters()} == {"cpu"}
