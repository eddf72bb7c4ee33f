"""Small synthetic data sets in the real on-disk formats, shared by the training tests.

The writers here produce the official layouts byte by byte (idx ``.gz`` files, CIFAR pickle
batches, class folders), so the readers are tested on what users have on disk.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx file (gzipped when ``path`` ends in .gz): magic 0 0 0x08 ndim, dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(data)


def make_patterns(n: int, size: int = 28, channels: int = 1, seed: int = 0, classes: int = 10):
    """A learnable toy problem: class k has its own brightness level, plus pixel noise.

    Brightness survives the training augmentation (shifts and flips), so a small net
    learns it in a couple of epochs.
    """
    g = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    g.shuffle(labels)
    levels = (12 + 22 * labels).astype(np.int64)[:, None, None, None]
    noise = g.integers(0, 12, size=(n, channels, size, size))
    images = np.clip(levels + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_fake_fashion_mnist(folder: Path, n_train: int = 320, n_test: int = 160) -> Path:
    """Fashion-MNIST's four idx .gz files with learnable toy images."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = make_patterns(n, seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return folder


def write_fake_cifar_pickles(folder: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    """``cifar-10-batches-py`` with 5 train batches + test batch, pickled as the original
    (a Python dict with bytes keys, a numpy uint8 data array, a list of int labels)."""
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    arrays = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = g.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in g.integers(0, 10, size=per_batch)]
        obj = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(obj, protocol=2))
        arrays[name] = (data, np.array(labels))
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return arrays


def write_image_folder(root: Path, classes: dict[str, list[np.ndarray]], fmt: str = "png") -> None:
    """``root/<class>/<i>.<fmt>`` from HWC uint8 arrays."""
    from PIL import Image

    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(images):
            Image.fromarray(arr).save(root / name / f"{i}.{fmt}")


@pytest.fixture
def fake_fmnist(tmp_path_factory) -> Path:
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def test_write_idx_roundtrip_matches_torchvision_reader(tmp_path):
    # torchvision's own idx reader is the independent reference for the format we write.
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    x, _ = make_patterns(7)
    write_idx(tmp_path / "images-idx3-ubyte", x[:, 0])
    ref = read_sn3_pascalvincent_tensor(str(tmp_path / "images-idx3-ubyte"))
    assert torch.equal(ref, torch.from_numpy(x[:, 0]))
