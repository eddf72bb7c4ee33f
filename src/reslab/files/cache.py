"""The one cache folder: downloads, converted weights, decoded and extracted data."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "RESLAB_CACHE"


def cache_dir(*parts: str) -> Path:
    """reslab's cache, or a folder inside it (not created here).

    ``$RESLAB_CACHE`` when set, else ``$XDG_CACHE_HOME/reslab``, else ``~/.cache/reslab``.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        root = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "reslab"
    return root.joinpath(*parts)
