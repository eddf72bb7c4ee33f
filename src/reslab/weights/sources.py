"""Where weights come from: local paths now; URLs and named tags resolve to cached files."""

from __future__ import annotations

from pathlib import Path

from reslab.weights.io import WeightsError

__all__ = ["fetch_source"]


def fetch_source(source: str) -> Path:
    """Return a local file for ``source`` (a path for now)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    raise WeightsError(f"{source}: no such weights file")
