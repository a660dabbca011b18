"""Tokenizer + model: tiny (built from config), hub id, local dir, random-init real shape, GGUF, and a
saved model (`model.path=<run dir>/model`: bench/models/saving.py wrote it)."""
from __future__ import annotations

import contextlib

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import (GenerationConfig, 
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from bench.models.gguf import converted_dir
from bench.errors import ConfigError
from bench.paths import existing_path
from bench.models.tokenizer import build_arithmetic_tokenizer

log = logging.getLogger(__name__)

# The real classes of the three target models, so tiny models exercise the same code paths.
TINY_ARCHITECTURES = {
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
}
SOURCES = ("tiny", "hub", "local", "gguf")
SPECIAL_ROLES = ("bos", "eos", "pad")  # pinned per model in conf/model/*.yaml `special_tokens`
SPECIALS_MISMATCH = ("fix", "error")  # model.specials_mismatch: what a pinned/loaded difference does
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ADAPTER_CONFIG_FILE = "adapter_config.json"  # peft's: an adapter dir, loaded onto the base it names
SAVED_MODEL_FILE = "saved_model.json"  # bench/models/saving.py's marker of a saved model dir


def saved_model_kind(path: Path | str | None) -> str | None:
    """"adapter" (a peft adapter dir: adapter_config.json), "full" (a dir save_model wrote), or None."""
    if not path or not Path(path).is_dir():
        return None
    if (Path(path) / ADAPTER_CONFIG_FILE).is_file():
        return "adapter"
    return "full" if (Path(path) / SAVED_MODEL_FILE).is_file() else None


def saved_model_dir(model_cfg) -> Path | None:
    """`model.path` when it is a saved model or adapter dir: then it wins over the yaml's source,
    base and tokenizer (`slmbench method=none model.path=<run dir>/model` evaluates a kept model).
    A tiny model's `model.path` must be such a dir: tiny models read no other path."""
    path = model_cfg.get("path")
    if not path:
        return None
    location = existing_path(path, "model.path")
    if saved_model_kind(location) is not None:
        return location
    if location.is_dir() and not (location / "config.json").is_file():
        raise ConfigError(f"model.path={path}: {location} is not a saved model dir: it holds no {SAVED_MODEL_FILE} "
                          f"(a model train.save_model=true kept), no {ADAPTER_CONFIG_FILE} (an adapter) and no "
                          "config.json (a Hugging Face model)")
    if model_cfg.source == "tiny":
        raise ConfigError(f"model.path={path}: not a saved model dir (no {SAVED_MODEL_FILE} or {ADAPTER_CONFIG_FILE}); "
                         f"a tiny model ({model_cfg.name}) reads model.path only to load a model "
                         "that train.save_model=true kept in <run dir>/model")
    return None


def adapter_base(adapter_dir: Path) -> str:
    """The base an adapter loads onto: peft's `base_model_name_or_path` (a local dir or a hub id)."""
    base = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG_FILE}: no base_model_name_or_path, so no base to load onto")
    return base


def load_saved_model(directory: Path, dtype: torch.dtype, trust_remote_code: bool = False) -> torch.nn.Module:
    """A full saved model as it is, or an adapter on its base (peft's PeftModel, frozen, eval mode)."""
    if saved_model_kind(directory) == "adapter":
        from peft import PeftModel

        base = adapter_base(directory)
        local = Path(base).is_dir()
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, local_files_only=local,
                                                     trust_remote_code=trust_remote_code)
        return PeftModel.from_pretrained(model, directory)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True,
                                                trust_remote_code=trust_remote_code)


def load_tokenizer(model_cfg, cache_dir: Path | str | None = None) -> Any:
    """`tokenizer: arithmetic` -> the synthetic task's; a local dir; null -> the weights' location.

    A local path never falls back to the hub (`local_files_only`); a missing one is an error. A saved
    model dir brings its own tokenizer (the one its run used), or an adapter without one its base's.
    """
    name = model_cfg.get("tokenizer")
    saved = saved_model_dir(model_cfg)
    if saved is not None:
        has_tokenizer = (saved / "tokenizer_config.json").is_file()
        location = str(saved) if has_tokenizer else adapter_base(saved)
        local = Path(location).is_dir()
    elif name == "arithmetic":
        return build_arithmetic_tokenizer()
    elif name:
        location, local = str(existing_path(name, "model.tokenizer")), True
    else:
        location, local = weights_location(model_cfg, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(
        location, local_files_only=local, trust_remote_code=bool(model_cfg.get("trust_remote_code", False))
    )
    apply_special_tokens(tokenizer, model_cfg)
    tokenizer.padding_side = "left"  # generation appends on the right; training pads itself
    return tokenizer


def apply_special_tokens(tokenizer, model_cfg) -> None:
    """The bos, eos and pad that `model.special_tokens` pins (as the model's authors publish them)
    replace what the tokenizer loaded when the two differ, with a warning naming both
    (`model.specials_mismatch=error`: refused). What a tokenizer loads depends on the transformers
    version: SmolLM2's GGUF tokenizer loads eos `<|im_start|>` and no pad on 5.17, `<|im_end|>` on 5.24.

    A pinned pad fills a tokenizer that has none (Llama-3.2: ours) with an info line. Unpinned
    models keep the tokenizer's pad, else pad with eos (logged)."""
    pinned = model_cfg.get("special_tokens") or {}
    for role in SPECIAL_ROLES:
        if role in pinned:
            pin_special_token(tokenizer, model_cfg, role, pinned[role])
    if tokenizer.pad_token_id is None:
        log.info("the tokenizer has no pad token and model.special_tokens.pad is not set: padding with eos %r",
                 tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token


def pin_special_token(tokenizer, model_cfg, role: str, want: str | None) -> None:
    have = getattr(tokenizer, f"{role}_token")
    if want == have:
        return
    key = f"model.special_tokens.{role}"
    if want is not None and want not in tokenizer.get_vocab():
        raise ValueError(f"{key}={want!r} is not a token of this tokenizer ({model_cfg.name})")
    if role == "pad" and have is None:
        log.info("the tokenizer of %s has no pad token: padding with %s=%r", model_cfg.name, key, want)
    else:
        message = (f"{key}: the tokenizer of {model_cfg.name} loaded {have!r}, but the model's authors "
                   f"publish {want!r}")
        if model_cfg.specials_mismatch == "error":
            raise ValueError(f"{message} (model.specials_mismatch=error; `fix` uses the published one)")
        log.warning("%s: using %r (model.specials_mismatch=fix)", message, want)
    setattr(tokenizer, f"{role}_token", want)


def weights_location(model_cfg, cache_dir: Path | str | None = None) -> tuple[str, bool]:
    """(where config/weights come from, whether that is local). `model.path` (a local dir) wins
    over `model.hub_id`; it must exist, so a typo never turns into a hub request."""
    source = model_cfg.source
    if source == "gguf":
        if cache_dir is None:
            raise ValueError(f"model.source=gguf needs a cache_dir for the converted checkpoint ({model_cfg.name})")
        return str(converted_dir(model_cfg, Path(cache_dir))), True
    if source in ("local", "hub") and model_cfg.get("path"):
        return str(existing_path(model_cfg.path, "model.path")), True
    if source == "local":
        raise ValueError(f"model.source=local needs model.path (model {model_cfg.name})")
    if source == "hub":
        if not model_cfg.get("hub_id"):
            raise ValueError(f"model.source=hub needs model.hub_id or model.path (model {model_cfg.name})")
        return str(model_cfg.hub_id), False
    raise ValueError(f"model.source={source!r}; allowed: {', '.join(SOURCES)}")


def build_tiny(model_cfg, tokenizer) -> torch.nn.Module:
    arch = model_cfg.arch
    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"model.arch={arch!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")
    config_cls, model_cls = TINY_ARCHITECTURES[arch]
    dims = dict(model_cfg.dims)
    config = config_cls(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **dims,
    )
    return model_cls(config)


def load_model(model_cfg, tokenizer, seed: int, cache_dir: Path | str | None = None,
               device: torch.device | None = None) -> torch.nn.Module:
    """Build or load the model in `model.dtype` (fp32 by default; autocast supplies bf16 compute on GPU).

    `init=random` builds the real shape from its config (hub id or local dir) with no weights
    downloaded: real memory and time without the checkpoint. With `dims` set as well, those config
    fields are overridden: a tiny model of the real architecture (its rope, norms, tying, vocab).
    `device`: where `init=random` builds the model (its weights are drawn there: the same seed gives
    other weights on a GPU than on the host). Our choice: the run's device, since a large shape
    built on the host took most of a lab row's time (docs/performance-analysis.md, "Measurements
    behind choices in the code"); every other source loads on the host.
    """
    torch.manual_seed(seed)
    source = model_cfg.source
    dtype = DTYPES[model_cfg.get("dtype", "float32")]
    saved = saved_model_dir(model_cfg)
    if saved is not None:
        model = load_saved_model(saved, dtype, bool(model_cfg.get("trust_remote_code", False)))
    elif source == "tiny":
        model = build_tiny(model_cfg, tokenizer)
    else:
        location, local = weights_location(model_cfg, cache_dir)
        remote = bool(model_cfg.get("trust_remote_code", False))
        init = model_cfg.get("init", "pretrained")
        if model_cfg.get("dims") and init != "random":
            raise ValueError(f"model.dims overrides the shape, so it needs model.init=random (got {init!r})")
        if init == "random":
            config = AutoConfig.from_pretrained(location, local_files_only=local, trust_remote_code=remote)
            for key, value in (model_cfg.get("dims") or {}).items():
                if not hasattr(config, key):
                    raise ValueError(f"model.dims.{key}: {type(config).__name__} has no such field")
                setattr(config, key, value)
            shrink_layer_types(config)
            with torch.device(device) if device is not None else contextlib.nullcontext():
                model = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
            # from_config ignores the folder's generation_config.json: its stop tokens (eos_token_id
            # lists, e.g. Phi-4-mini's <|end|>) must still reach the eval engines (bench/eval/stop_tokens.py).
            if local and (Path(location) / "generation_config.json").exists():
                model.generation_config = GenerationConfig.from_pretrained(location)
        elif init == "pretrained":
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, local_files_only=local,
                                                         trust_remote_code=remote)
        else:
            raise ValueError(f"model.init={init!r}; allowed: pretrained, random")
    model = model.to(dtype)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only "
                         f"{model.get_input_embeddings().num_embeddings} ({model_cfg.name})")
    # The model must pad with the tokenizer's pad token (Llama-3.2's config has none).
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def shrink_layer_types(config) -> None:
    """A `dims.num_hidden_layers` below the real depth keeps the first layers' `layer_types` (the
    entries those layers read at forward time); transformers refuses to save a config whose list
    is longer than its depth (configuration_utils.py validate_layer_type)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and len(layer_types) > config.num_hidden_layers:
        config.layer_types = list(layer_types[: config.num_hidden_layers])


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside a peft wrapper (peft's PeftModel wraps it twice), or
    `model` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a causal LM, plain or peft-wrapped."""
    return causal_lm(model).get_decoder().layers


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant checkpointing, with nothing forcing grad on the embedding output.

    transformers 5 (`_activation_checkpointing_enable`) calls `enable_input_require_grads()` for every
    text model, a workaround that only re-entrant checkpointing needs. With it, backward always runs
    down to the embeddings, so frozen-block methods could never stop at their lowest active block.
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    remove_embedding_grad_hooks(model)


def remove_embedding_grad_hooks(model: torch.nn.Module) -> None:
    """Undo `enable_input_require_grads()` wherever transformers or peft installed it.

    Both install it for re-entrant checkpointing (transformers 5 on every checkpointing enable,
    peft 0.21 peft_model.py:184 when wrapping a checkpointing model); with our non-reentrant
    checkpointing it only makes autograd run backward through every frozen layer below the
    lowest trainable block.
    """
    for module in model.modules():
        if getattr(module, "_require_grads_hooks", None) or getattr(module, "_require_grads_hook", None):
            module.disable_input_require_grads()


def unique_parameters(params) -> list[torch.nn.Parameter]:
    """Each tensor once, in first-seen order: tied embeddings are one tensor under two names."""
    return list({id(p): p for p in params}.values())
