"""Files written whole or not at all, content digests and the cache directory: one way for every package."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

CACHE_ENV = "SHOPVISION_CACHE_DIR"
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks (a model file can be hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` so that a reader (or a crash) sees the old file or the new one, never half of one.

    ``durable`` also waits until the file and its name are on disk, for data whose loss an acknowledgement
    has already ruled out (a stored photo); a config or a thumbnail that can be made again does not need it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(handle, 0o644)  # mkstemp makes 0600 files; the server may run as another user
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make the names created or replaced in ``directory`` durable (POSIX: a rename lives in the directory)."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def cache_dir(*parts: str) -> Path:
    """Where shopvision keeps what it can fetch again: ``$SHOPVISION_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/shopvision``, else ``~/.cache/shopvision``; ``parts`` name a subfolder (not created)."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shopvision"
    return root.joinpath(*parts)
