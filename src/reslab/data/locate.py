"""Where data sets live: search order, the cache folder, checksummed downloads, safe extraction.

Search order for ``--data NAME``: the ``data_dir`` argument (``--data-dir``), ``$RESLAB_DATA``,
``~/.cache/reslab`` (``$XDG_CACHE_HOME/reslab``), then per-dataset system folders such as
Debian's ``/usr/share/datasets/fashion-mnist``. Archives found there are extracted into the
cache, never next to the archive (it may be read-only, or a source checkout).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DATA_ENV",
    "DataNotFoundError",
    "cache_dir",
    "download",
    "extract_archive",
    "file_digest",
    "search_dirs",
]

DATA_ENV = "RESLAB_DATA"


class DataNotFoundError(FileNotFoundError):
    """A data set that is neither on disk nor downloadable; the message says how to get it."""


def cache_dir() -> Path:
    """reslab's cache folder: ``$XDG_CACHE_HOME/reslab`` or ``~/.cache/reslab``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reslab"


def search_dirs(data_dir: str | Path | None = None, extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders to look in, in order: ``data_dir``, ``$RESLAB_DATA``, the cache, then ``extra``."""
    dirs: list[Path] = []
    for d in (data_dir, os.environ.get(DATA_ENV), cache_dir(), *extra):
        if d and Path(d).expanduser() not in dirs:
            dirs.append(Path(d).expanduser())
    return dirs


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str, dest: str | Path, checksum: tuple[str, str], *, progress: bool = True
) -> Path:
    """Fetch ``url`` to ``dest`` and verify ``checksum`` = ``(algorithm, hexdigest)``.

    The file appears at ``dest`` only once complete and verified (temp file + rename).
    """
    dest = Path(dest)
    if dest.is_file() and file_digest(dest, checksum[0]) == checksum[1]:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            bar = _bar(total, f"download {dest.name}", progress)
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
            bar.close()
        got = file_digest(tmp, checksum[0])
        if got != checksum[1]:
            raise OSError(f"{url}: {checksum[0]} mismatch (got {got}, expected {checksum[1]})")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def extract_archive(archive: str | Path, dest_root: str | Path | None = None) -> Path:
    """Extract a ``.tar.gz`` into ``dest_root`` (default: the cache) once; return ``dest_root``.

    Extraction goes to a temporary folder that is renamed into place, so an interrupted
    extraction never leaves a half-filled folder that later runs would trust. A marker file
    records which archive (name and size) produced the folder.
    """
    archive = Path(archive)
    dest_root = Path(dest_root) if dest_root is not None else cache_dir()
    marker = dest_root / f".extracted-{archive.name}-{archive.stat().st_size}"
    if marker.is_file():
        return dest_root
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}.", dir=dest_root))
    try:
        with tarfile.open(archive) as tar:
            # "data" filter: no absolute paths, no links outside, no device files.
            tar.extractall(tmp, filter="data")
        for child in tmp.iterdir():
            target = dest_root / child.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(child, target)
        marker.touch()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest_root


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=desc, disable=not enabled)
