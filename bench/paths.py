"""Paths in configs: absolute, or relative to the directory `slmbench` was started from.

Every relative path of a run's config (data files, `model.path`, `model.tokenizer`, `cache_dir`,
`store_dir`, Hydra's `outputs/`) means the same directory as in the user's shell, whether the
harness is a checkout, an editable install or a `pip install .` into site-packages. Hydra 1.3
leaves the working directory alone (`hydra.job.chdir` false), so `cache_dir` and the outputs are
already read from it; `launch_dir` also holds when a config sets `hydra.job.chdir=true`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.errors import ConfigError

# Where `bench/` and `conf/` are: the checkout, or site-packages after a non-editable install.
# Code reads its own files (the yaml configs) from here, never the user's data.
CODE_ROOT = Path(__file__).resolve().parent.parent


def launch_dir() -> Path:
    """The directory slmbench was started from (Hydra's `runtime.cwd` when a Hydra app runs)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path(os.getcwd())


def resolve_path(path: str | Path) -> Path:
    """`../shared/data/x` is read from where the user stands, as their shell would read it."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (launch_dir() / path).resolve()


class MissingPath(ConfigError, FileNotFoundError):
    """A configured path that does not exist: bad input (exit 2), still a FileNotFoundError."""


def existing_path(path: str | Path, key: str) -> Path:
    """The resolved path, or an error naming the config key, the value and where it was looked for."""
    resolved = resolve_path(path)
    if not resolved.exists():
        raise MissingPath(f"{key}={path!r}: {resolved} does not exist "
                          f"(relative paths are read from the directory slmbench was started in, {launch_dir()})")
    return resolved


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (data files, checkpoints, weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
