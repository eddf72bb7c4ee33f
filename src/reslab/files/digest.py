"""File digests, streamed (a weights file does not have to fit in memory twice)."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_digest", "file_sha256"]


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (``algorithm``: any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file."""
    return file_digest(path, "sha256")
