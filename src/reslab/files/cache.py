"""The one cache folder: downloads, converted weights, decoded and extracted data.

Besides the folder itself, this room owns the format of the cache's array entries (decoded
image folders): a safetensors file of numpy arrays, never a pickle, whose metadata holds the
entry's key and a SHA-256 of every array. A reader checks both, so a truncated, bit-flipped or
misplaced entry is refused with a one-line :class:`DamagedCacheError` (its owner decodes the
data again) instead of being trusted. Entries are written atomically (temporary file, fsync,
rename): a killed writer leaves the old entry or none, never half of one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from reslab.files.atomic import atomic_write

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ARRAY_CACHE_FORMAT",
    "CACHE_ENV",
    "DamagedCacheError",
    "cache_dir",
    "cache_key",
    "read_array_cache",
    "write_array_cache",
]

CACHE_ENV = "RESLAB_CACHE"
ARRAY_CACHE_FORMAT = "reslab-arrays-1"


class DamagedCacheError(ValueError):
    """A cache entry that cannot be trusted (truncated, altered, or another entry's file)."""


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


def cache_key(*parts: object) -> str:
    """A 16-hex-digit key of ``parts`` (each written as ``repr``, separated)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:16]


def _digest(array: np.ndarray) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def write_array_cache(path: str | Path, arrays: dict[str, np.ndarray], key: str) -> Path:
    """Store ``arrays`` at ``path`` (atomically) as the cache entry for ``key``."""
    from safetensors.numpy import save_file

    meta = {"format": ARRAY_CACHE_FORMAT, "key": key}
    meta.update({f"sha256:{name}": _digest(a) for name, a in arrays.items()})
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=meta))


def read_array_cache(path: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of the entry at ``path``; ``None`` when there is none.

    Raises :class:`DamagedCacheError` (one line, naming the file) when the file is not a
    complete entry for ``key``: unreadable, written for another key, or an array whose digest
    does not match the one stored with it.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DamagedCacheError(f"{path}: damaged cache entry ({reason})") from None
    if meta.get("format") != ARRAY_CACHE_FORMAT or meta.get("key") != key:
        raise DamagedCacheError(f"{path}: not the cache entry for key {key}")
    for name, array in arrays.items():
        if meta.get(f"sha256:{name}") != _digest(array):
            raise DamagedCacheError(f"{path}: damaged cache entry ({name!r} fails its checksum)")
    if set(arrays) != {k.split(":", 1)[1] for k in meta if k.startswith("sha256:")}:
        raise DamagedCacheError(f"{path}: damaged cache entry (arrays missing)")
    return arrays
