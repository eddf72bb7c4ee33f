"""Safe, once-only extraction of ``.tar.gz`` archives into the cache.

Each archive gets its own folder in the cache, named after the archive and keyed on its path,
size and modification time, so a changed archive is extracted afresh and nothing else in the
cache (or anywhere else) is ever deleted or overwritten. Extraction goes to a temporary folder
renamed into place, so an interrupted extraction never looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from reslab.files.cache import cache_dir
from reslab.files.digest import file_digest
from reslab.files.download import DownloadError

__all__ = ["extract_archive"]


def _key(archive: Path) -> str:
    st = archive.stat()
    text = f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stem(archive: Path) -> str:
    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def extract_archive(
    archive: str | Path,
    *,
    digest: tuple[str, str] | None = None,
    dest_root: str | Path | None = None,
) -> Path:
    """Extract ``archive`` once and return the folder holding its contents.

    Args:
        archive: a ``.tar.gz`` (or ``.tar``) file.
        digest: ``(algorithm, hex digest)`` the archive must have; checked before the first
            extraction, so a damaged or substituted archive is refused.
        dest_root: where the per-archive folders go (default: the cache's ``extracted/``).

    Members are extracted with tarfile's ``"data"`` filter: no absolute paths, no links
    leaving the folder, no device files.
    """
    archive = Path(archive)
    root = Path(dest_root) if dest_root is not None else cache_dir("extracted")
    target = root / f"{_stem(archive)}-{_key(archive)}"
    if (target / ".complete").is_file():
        return target
    if digest is not None:
        got = file_digest(archive, digest[0])
        if got != digest[1].lower():
            raise DownloadError(
                f"{archive}: {digest[0]} {got} does not match the published {digest[1]}; "
                "not extracting a damaged or different archive"
            )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DownloadError(f"{archive}: corrupt or truncated archive ({err})") from None
        (tmp / ".complete").touch()
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
