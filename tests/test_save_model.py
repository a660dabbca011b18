"""Kept models (`train.save_model=true`): save -> `model.path=<dir>` load gives the same model, and
the weights' provenance identifies the checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from bench.models.loading import (ADAPTER_CONFIG_FILE, SAVED_MODEL_FILE, causal_lm, load_model, load_tokenizer,
                                  saved_model_kind)
from bench.models.saving import save_model, weights_origin, weights_provenance
from bench.models.tokenizer import build_arithmetic_tokenizer
from bench.run.base_model import load_or_build_base
from bench.run.recipe import Run
from methods.base import MethodContext
from methods.lora import LoRA
from tests.conftest import compose_config, run_cli

PROMPTS = ["17#5=", "3+4=", "29<1="]


def synthetic_base(cache_dir):
    cfg = compose_config(f"cache_dir={cache_dir}")
    tokenizer = load_tokenizer(cfg.model)
    return cfg, tokenizer, load_or_build_base(cfg, tokenizer, Run.build)


def logits(model, tokenizer) -> torch.Tensor:
    model.eval()
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def reload(model_dir):
    """What `slmbench model.path=<dir>` builds: the default model yaml (tiny-llama) plus the path."""
    cfg = compose_config(f"model.path={model_dir}")
    tokenizer = load_tokenizer(cfg.model)
    return load_model(cfg.model, tokenizer, seed=123), tokenizer


def test_lora_adapter_round_trip_gives_identical_logits(cache_dir, tmp_path):
    cfg, tokenizer, base = synthetic_base(cache_dir)
    origin = weights_origin(base)
    model = LoRA(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj", "down_proj"], use_rslora=False).prepare(
        base, MethodContext(device=torch.device("cpu"), total_steps=1, steps_per_epoch=1,
                            gradient_checkpointing=False, seed=0))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft initialises B to zero: make the adapter change the output
            param.data.normal_(std=0.5)
    expected = logits(model, tokenizer)

    saved = save_model(model, tokenizer, tmp_path / "model", origin)

    assert saved["kind"] == "adapter" and saved["bytes"] > 0 and saved_model_kind(saved["path"]) == "adapter"
    adapter_config = json.loads((tmp_path / "model" / ADAPTER_CONFIG_FILE).read_text())
    assert adapter_config["base_model_name_or_path"] == origin == str((cache_dir / "base-models").resolve()
                                                                       / origin.rsplit("/", 1)[-1])
    reloaded, reloaded_tokenizer = reload(tmp_path / "model")
    assert type(reloaded).__name__ == "PeftModelForCausalLM"
    assert torch.equal(logits(reloaded, reloaded_tokenizer), expected)
    assert not torch.equal(logits(causal_lm(reloaded).__class__.from_pretrained(origin), tokenizer), expected)


def test_full_model_round_trip_gives_identical_logits_and_tokenizer(cache_dir, tmp_path):
    cfg, tokenizer, model = synthetic_base(cache_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.add_(torch.randn_like(model.model.layers[1].mlp.up_proj.weight))
    expected = logits(model, tokenizer)

    saved = save_model(model, tokenizer, tmp_path / "model", weights_origin(model))

    assert saved["kind"] == "full" and saved_model_kind(tmp_path / "model") == "full"
    assert (tmp_path / "model" / "model.safetensors").is_file() and (tmp_path / "model" / SAVED_MODEL_FILE).is_file()
    reloaded, reloaded_tokenizer = reload(tmp_path / "model")
    assert torch.equal(logits(reloaded, reloaded_tokenizer), expected)
    assert reloaded_tokenizer.padding_side == "left"


def test_arithmetic_tokenizer_round_trips_through_save_pretrained(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = build_arithmetic_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = ["12#7=20", "max 3,4 (ok)?"]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.batch_decode(loaded(text)["input_ids"]) == text
    assert len(loaded) == len(tokenizer) and loaded.get_vocab() == tokenizer.get_vocab()
    for special in ("pad", "bos", "eos", "unk"):
        assert getattr(loaded, f"{special}_token_id") == getattr(tokenizer, f"{special}_token_id")


def test_tiny_model_path_must_be_a_saved_model_dir(tmp_path):
    cfg = compose_config(f"model.path={tmp_path}")
    with pytest.raises(ValueError, match="not a saved model dir"):
        load_tokenizer(cfg.model)


def test_adapter_on_a_random_base_is_refused(tmp_path):
    cfg = compose_config("model.base=null")
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, tokenizer, seed=0)
    assert weights_origin(model) is None
    model = LoRA(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj"], use_rslora=False).prepare(
        model, MethodContext(device=torch.device("cpu"), total_steps=1, steps_per_epoch=1,
                            gradient_checkpointing=False, seed=0))
    with pytest.raises(ValueError, match="randomly initialised"):
        save_model(model, tokenizer, tmp_path / "model", weights_origin(model))


def test_weights_provenance_identifies_the_checkpoint(cache_dir, tmp_path):
    cfg, tokenizer, model = synthetic_base(cache_dir)
    origin = weights_origin(model)
    base = weights_provenance(cfg.model, origin)
    assert base["loaded_from"] == origin and base["cache_key"] == origin.rsplit("/", 1)[-1]
    assert base["weight_files"] == ["model.safetensors"] and len(base["config_sha256"]) == 64
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    save_model(model, tokenizer, tmp_path / "model", origin)
    tuned = weights_provenance(compose_config(f"model.path={tmp_path / 'model'}").model, tmp_path / "model")
    # Same shapes, so the same header listing; the contents tell the fine-tune from its base.
    assert tuned["weight_listing_sha256"] == base["weight_listing_sha256"]
    assert tuned["weights_sha256"] != base["weights_sha256"]
    assert weights_provenance(cfg.model, None)["init"] == "random"
    hub = weights_provenance(compose_config("model=qwen2.5-0.5b").model, "no-such-org/no-such-model")
    assert hub["loaded_from"] == "no-such-org/no-such-model" and hub["hub_revision"] is None


def one_run(cwd, name, *overrides):
    """`slmbench OVERRIDES` as a user types it, its run dir named `name`; returns (run dir, record)."""
    run_dir = cwd / name
    run_cli(cwd, *overrides, "eval.limit=30", "wandb.mode=disabled", f"hydra.run.dir={run_dir}")
    return run_dir, json.loads((run_dir / "result.json").read_text())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kept_model_evaluates_to_the_runs_accuracy_through_the_cli(method, cache_dir, tmp_path, request):
    if method == "full":  # the same two runs as tests/test_launch_dir.py's (tests/conftest.py kept_full_model)
        runs = request.getfixturevalue("kept_full_model")
        (run_dir, trained), (eval_dir, evaluated) = [(runs[name], json.loads((runs[name] / "result.json").read_text()))
                                                     for name in ("kept", "again")]
    else:
        run_dir, trained = one_run(tmp_path, "train", f"method={method}", "train.max_steps=20", "train.save_model=true",
                                   f"cache_dir={cache_dir}")
        eval_dir, evaluated = one_run(tmp_path, "eval", "method=none", f"model.path={run_dir / 'model'}",
                                      f"cache_dir={cache_dir}")
    kind = {"lora": "adapter", "full": "full"}[method]
    assert trained["saved_model"]["kind"] == kind and trained["saved_model"]["path"] == str(run_dir / "model")
    assert trained["weights"]["cache_key"] in trained["weights"]["loaded_from"]

    assert evaluated["status"] == "ok" and "saved_model" not in evaluated
    assert evaluated["weights"]["loaded_from"] == str(run_dir / "model")
    assert evaluated["metrics"]["accuracy_by_task"] == trained["metrics"]["accuracy_by_task"]
    generations = [[json.loads(line)["generation"] for line in (d / "samples.jsonl").read_text().splitlines()]
                   for d in (run_dir, eval_dir)]
    assert generations[0] == generations[1]
    # The kept model, cross-checked with lm-evaluation-harness on the run's own prompts.
    pytest.importorskip("lm_eval")
    from bench.eval.lm_eval_check import cross_check

    checked = cross_check(run_dir)["eval_sets"]["arithmetic"]
    assert checked["agreement"] == 1.0 and checked["lm_eval_accuracy"] == trained["metrics"]["accuracy"]
