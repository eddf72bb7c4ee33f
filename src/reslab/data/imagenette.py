"""Imagenette (fastai's 10-class subset of ImageNet) by name: ``--data imagenette``.

Looked for in the data folders (:func:`~reslab.data.locate.search_dirs`), first as a folder
with ``train/`` and ``val/``, then as archives, which are extracted once into the cache:
fastai's ``imagenette2-160.tgz`` (the shortest side 160 px, the copy fastbook's chapter 14
trains on), ``imagenette2-320.tgz``, ``imagenette2.tgz`` (full size), or a 224 px copy whose
images were squashed to 224 x 224 and whose splits come as two archives
(``imagenette2-224sq-{train,val}.tar.gz``, checked against their SHA-256). Variants are tried
in that order. There is no download: fastai publishes no checksums to check one against.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from reslab.data.locate import DataNotFoundError, search_dirs
from reslab.files import cache_dir, cache_key, extract_archive

__all__ = ["IMAGENETTE_VARIANTS", "find_imagenette"]

IMAGENETTE_VARIANTS = ("imagenette2-160", "imagenette2-320", "imagenette2", "imagenette2-224sq")
# Variants shipped as one archive holding VARIANT/{train,val}/ (fastai's).
WHOLE_ARCHIVES = {v: (f"{v}.tgz", f"{v}.tar.gz") for v in IMAGENETTE_VARIANTS[:3]}
# Variants shipped as one archive per split, each holding VARIANT/<split>/, with their digests.
SPLIT_ARCHIVES = {
    "imagenette2-224sq": {
        "train": (
            "imagenette2-224sq-train.tar.gz",
            "bdf95ec5dbc7fbf9362e193f0be905c2dfd4a5410bb84d4cb11263ba5f449983",
        ),
        "val": (
            "imagenette2-224sq-val.tar.gz",
            "8bbdabe345e5b648f4d1adcbb7fdf82f4da4a1fa5840603249735a1d6b0c2918",
        ),
    }
}
HOW_TO_GET = (
    "Imagenette not found: put fastai's imagenette2-160.tgz (or imagenette2-320.tgz, "
    "imagenette2.tgz; from github.com/fastai/imagenette) or an extracted imagenette2-160/ "
    "folder with train/ and val/ in --data-dir or $RESLAB_DATA, or pass --data FOLDER"
)


def _is_split_folder(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "val").is_dir()


def find_imagenette(data_dir: str | Path | None = None) -> Path:
    """A folder holding Imagenette's ``train/`` and ``val/`` (see the module for the order)."""
    dirs = search_dirs(data_dir)
    for variant in IMAGENETTE_VARIANTS:
        for base in dirs:
            for folder in (base / variant, base):
                if folder.name == variant and _is_split_folder(folder):
                    return folder
        for base in dirs:
            for name in WHOLE_ARCHIVES.get(variant, ()):
                if (base / name).is_file():
                    folder = extract_archive(base / name) / variant
                    if _is_split_folder(folder):
                        return folder
            parts = SPLIT_ARCHIVES.get(variant, {})
            if parts and all((base / name).is_file() for name, _ in parts.values()):
                return _join_splits(base, variant, parts)
    raise DataNotFoundError(HOW_TO_GET)


def _join_splits(base: Path, variant: str, parts: dict[str, tuple[str, str]]) -> Path:
    """Extract one archive per split and return a cache folder linking them as ``train/``,
    ``val/`` (made once, atomically, like an extraction)."""
    splits = {
        split: extract_archive(base / name, digest=("sha256", digest)) / variant / split
        for split, (name, digest) in parts.items()
    }
    for split, folder in splits.items():
        if not folder.is_dir():
            raise DataNotFoundError(f"{base / parts[split][0]}: holds no {variant}/{split}/ folder")
    root = cache_dir("extracted")
    target = root / f"{variant}-{cache_key(*sorted((k, str(v)) for k, v in splits.items()))}"
    if _is_split_folder(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        for split, folder in splits.items():
            (tmp / split).symlink_to(folder, target_is_directory=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_split_folder(target):  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
