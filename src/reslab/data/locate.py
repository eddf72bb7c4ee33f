"""Where data sets live: the search order for ``--data NAME``.

Search order: the ``data_dir`` argument (``--data-dir``), ``$RESLAB_DATA``, reslab's cache
(``$RESLAB_CACHE``, else ``~/.cache/reslab``), then per-dataset system folders such as Debian's
``/usr/share/datasets/fashion-mnist``. Archives found there are extracted into the cache, never
next to the archive (it may be read-only, or a source checkout); downloads go to the cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reslab.files import cache_dir

__all__ = ["DATA_ENV", "DataNotFoundError", "search_dirs"]

DATA_ENV = "RESLAB_DATA"


class DataNotFoundError(FileNotFoundError):
    """A data set that is neither on disk nor downloadable; the message says how to get it."""


def search_dirs(data_dir: str | Path | None = None, extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders to look in, in order: ``data_dir``, ``$RESLAB_DATA``, the cache, then ``extra``.

    A ``data_dir`` that does not exist is an error: a typo must not silently fall through to
    other folders.
    """
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    dirs: list[Path] = []
    for d in (data_dir, os.environ.get(DATA_ENV), cache_dir(), *extra):
        if d and Path(d).expanduser() not in dirs:
            dirs.append(Path(d).expanduser())
    return dirs
