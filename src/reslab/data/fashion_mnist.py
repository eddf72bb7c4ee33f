"""Fashion-MNIST from the original idx ``.gz`` files (Zalando Research, 28x28 grey, 10 classes)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reslab.data.locate import DataNotFoundError, search_dirs
from reslab.files import DownloadError, cache_dir, download

__all__ = ["FASHION_MNIST_CLASSES", "find_fashion_mnist", "read_idx", "read_fashion_mnist"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 of the official .gz files (as published by Zalando and used by torchvision).
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SUBDIRS = ("", "fashion-mnist", "FashionMNIST/raw")
HOW_TO_GET = (
    "Fashion-MNIST not found: put the four idx .gz files in --data-dir or $RESLAB_DATA, "
    "`apt-get install dataset-fashion-mnist`, or run once online to download them"
)

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"
}  # fmt: skip


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic ``0 0 dtype ndim``, big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read idx file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: truncated or corrupt idx file ({len(raw) - header} data bytes, "
            f"expected {expected} for shape {tuple(dims)})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_fashion_mnist(data_dir: str | Path | None = None, download_ok: bool = True) -> Path:
    """The folder holding the four idx files, downloading them into the cache if needed."""
    for base in search_dirs(data_dir, extra=[DEBIAN_DIR]):
        for sub in SUBDIRS:
            folder = base / sub
            if all((folder / name).is_file() for name in FILES):
                return folder
    if download_ok and not os.environ.get("RESLAB_OFFLINE"):
        folder = cache_dir("fashion-mnist")
        try:
            for name, md5 in FILES.items():
                download(URL + name, folder / name, digest=("md5", md5))
            return folder
        except DownloadError as err:
            raise DataNotFoundError(f"{HOW_TO_GET} (download failed: {err})") from None
    raise DataNotFoundError(HOW_TO_GET)


def read_fashion_mnist(
    split: str, data_dir: str | Path | None = None, download_ok: bool = True
) -> tuple[Tensor, Tensor]:
    """``(images uint8 (N, 1, 28, 28), labels int64 (N,))`` of the ``train`` or ``test`` split."""
    folder = find_fashion_mnist(data_dir, download_ok)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: images {images.shape} and labels {labels.shape} do not match up"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{folder}: label {int(labels.max())} out of range for 10 classes")
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
