"""Keep the fine-tuned model (`train.save_model=true`) and record where a run's weights came from.

`save_model` writes `<run dir>/model/`:
- peft-wrapped models (LoRA, IST): the adapter through peft's `save_pretrained`, whose
  adapter_config.json names the base in `base_model_name_or_path` (an absolute local dir, or a hub
  id), plus the tokenizer the run used;
- every other method: the whole causal LM as safetensors with its config, plus the tokenizer.
Either way a `saved_model.json` marker says what the dir holds; `bench.models.loading` recognises
the dir by it (or by adapter_config.json) when `model.path` points there.

`weights_provenance` says where a run's starting weights came from: a path with sha256 digests of
its config and of its weight listing, or a hub id with the revision the local cache resolved.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch

from bench.models.loading import ADAPTER_CONFIG_FILE, SAVED_MODEL_FILE, causal_lm
from bench.paths import file_sha256

# Weight files at most this large also get a sha256 of their full contents (our choice): tiny
# models and adapters, where a fine-tune keeps the header listing identical and only the content
# tells two checkpoints apart. Larger checkpoints are identified by config + header listing.
CONTENT_HASH_MAX_BYTES = 256 * 2**20


def is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


def weights_origin(model: torch.nn.Module) -> str | None:
    """Where `from_pretrained` read the model's starting weights (a local dir made absolute, or a hub
    id), or None for a model built from a config (random init, `model.base=null`)."""
    origin = getattr(causal_lm(model).config, "_name_or_path", "") or ""
    if not origin:
        return None
    return str(Path(origin).resolve()) if Path(origin).exists() else origin


def save_model(model: torch.nn.Module, tokenizer, out_dir: Path | str, base_path: str | Path | None) -> dict:
    """Write the model to `out_dir`; returns {"path", "bytes", "kind": "adapter" | "full"}.

    `base_path`: where the adapter's base weights load from (`weights_origin(model)` gives it).
    An adapter on a randomly initialised base has no loadable base, so that is refused.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_peft_model(model):
        if base_path is None:
            raise ValueError("train.save_model: this adapter's base was randomly initialised (model.base=null or "
                             "model.init=random), so no saved base exists to load it onto; save a full "
                             "fine-tune instead, or start from a pretrained or synthetic base")
        kind, base = "adapter", str(base_path)
        for config in model.peft_config.values():
            config.base_model_name_or_path = base  # how the adapter finds its base (peft's own field)
        model.save_pretrained(out_dir)
    else:
        kind, base = "full", None
        causal_lm(model).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    marker = {"kind": kind, "base_path": base, "format_version": 1}
    (out_dir / SAVED_MODEL_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    return {"path": str(out_dir.resolve()), "bytes": size, "kind": kind}


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file: every tensor's name, dtype, shape and byte range
    (safetensors format: an 8-byte little-endian length, then the header)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return handle.read(length)


def directory_digests(directory: Path) -> dict:
    """sha256 of config.json (adapter_config.json for an adapter), of the weight listing (the shard
    index when there is one, else every safetensors header in name order), and of the weight
    contents when they are small (CONTENT_HASH_MAX_BYTES)."""
    config = next((directory / n for n in ("config.json", ADAPTER_CONFIG_FILE) if (directory / n).is_file()), None)
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    index = sorted(directory.glob("*.index.json"))
    listing = hashlib.sha256()
    for path in index or weights:
        listing.update(path.name.encode())
        listing.update(path.read_bytes() if path in index or path.suffix != ".safetensors"
                       else safetensors_header(path))
    total = sum(p.stat().st_size for p in weights)
    content = None
    if weights and total <= CONTENT_HASH_MAX_BYTES:
        content = hashlib.sha256("".join(f"{p.name}:{file_sha256(p)}" for p in weights).encode()).hexdigest()
    return {"config_sha256": file_sha256(config) if config else None,
            "weight_files": [p.name for p in weights],
            "weight_listing_sha256": listing.hexdigest() if weights else None,
            "weights_bytes": total,
            "weights_sha256": content}


def weights_provenance(model_cfg, loaded_from: str | Path | None) -> dict:
    """Where the run's starting weights came from, for result.json's `weights`.

    `loaded_from`: `weights_origin(model)` before the method wraps it (a local dir, a hub id, or
    None for a model built from its config). A tiny synthetic base's dir name holds its cache key
    (bench/run/base_model.py); an adapter dir also records its base's provenance.
    """
    record = {"model": model_cfg.get("name"), "source": model_cfg.get("source"), "loaded_from": None}
    if loaded_from is None:
        return {**record, "init": "random", "note": "built from its config with the run's seed: no weights read"}
    path = Path(str(loaded_from))
    if not path.is_dir():
        return {**record, "loaded_from": str(loaded_from), **hub_revision(str(loaded_from))}
    record.update(loaded_from=str(path.resolve()), **directory_digests(path))
    if model_cfg.get("source") == "tiny" and model_cfg.get("base") == "synthetic":
        record["cache_key"] = path.name
    adapter_config = path / ADAPTER_CONFIG_FILE
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        record["base"] = weights_provenance({"name": None, "source": None}, base)
    return record


def hub_revision(hub_id: str) -> dict:
    """The commit the local hub cache resolved `hub_id` to (from_pretrained read that snapshot)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(hub_id, local_files_only=True))
    except Exception as err:  # not in the cache: say so instead of guessing a revision
        return {"hub_revision": None, "note": f"not in the local hub cache ({type(err).__name__})"}
    return {"hub_revision": snapshot.name, **directory_digests(snapshot)}
