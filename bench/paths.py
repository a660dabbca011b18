"""Paths in configs: absolute, or relative to the repository root (never to Hydra's run dir)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from bench.config.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | Path) -> Path:
    """`../shared/data/x` means the same file whatever directory slmbench was started from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path).resolve()


class MissingPath(ConfigError, FileNotFoundError):
    """A configured path that does not exist: bad input (exit 2), still a FileNotFoundError."""


def existing_path(path: str | Path, key: str) -> Path:
    """The resolved path, or an error naming the config key, the value and where it was looked for."""
    resolved = resolve_path(path)
    if not resolved.exists():
        raise MissingPath(f"{key}={path!r}: {resolved} does not exist "
                                f"(relative paths are resolved against the repository root {REPO_ROOT})")
    return resolved


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (data files, checkpoints, weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
