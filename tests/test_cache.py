"""``$RESLAB_CACHE`` moves every cache: data downloads and extractions, decoded image folders,
downloaded weights and converted TF.js models. Nothing lands in ``$XDG_CACHE_HOME``."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab.data import cifar, load_dataset
from reslab.data import fashion_mnist as fm
from reslab.files import file_sha256
from reslab.weights import weights_file
from test_data_synthetic import make_patterns, write_fake_fashion_mnist, write_image_folder
from test_keras_convert import _keras_resnet50_weights, write_tfjs


@pytest.fixture
def caches(tmp_path, monkeypatch):
    moved, default = tmp_path / "moved", tmp_path / "xdg"
    monkeypatch.setenv("RESLAB_CACHE", str(moved))
    monkeypatch.setenv("XDG_CACHE_HOME", str(default))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.delenv("RESLAB_OFFLINE", raising=False)
    return moved, default


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_reslab_cache_moves_every_cache(caches, tmp_path, monkeypatch):
    moved, default = caches
    # 1. A data download (Fashion-MNIST from a file:// mirror, checked against its md5s).
    mirror = write_fake_fashion_mnist(tmp_path / "mirror", n_train=20, n_test=10)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setattr(fm, "URL", mirror.as_uri() + "/")
    monkeypatch.setattr(fm, "FILES", md5)
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "no-debian"))
    assert len(load_dataset("fashion-mnist", "test")) == 10
    # 2. An archive found in a data folder, extracted into the cache.
    src = tmp_path / "src" / "cifar10-jpg"
    for split in ("train", "test"):
        x, _ = make_patterns(2, size=32, channels=3)
        arrays = [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in x]
        write_image_folder(src / split, {c: arrays for c in cifar.CIFAR10_CLASSES})
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "cifar10-jpg.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar10-jpg")
    known = (cifar.JPEG_DIR, ("sha256", file_sha256(data / "cifar10-jpg.tar.gz")))
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10-jpg.tar.gz", known)
    # 3. The decoded tensors of that image folder, cached for the next run.
    assert len(load_dataset("cifar10", "test", data_dir=data)) == 20
    # 4. A weights download and 5. a converted Keras TF.js model.
    state = reslab.create_model("resnet20").state_dict()
    torch.save(state, tmp_path / "w.pth")
    url = f"{(tmp_path / 'w.pth').as_uri()}#sha256={file_sha256(tmp_path / 'w.pth')}"
    weights_file(url)
    folder = write_tfjs(tmp_path / "tfjs", _keras_resnet50_weights())
    weights_file(str(folder))

    found = _files_under(moved)
    assert any(f.startswith("fashion-mnist/") for f in found), found
    assert any(f.startswith("extracted/cifar10-jpg-") for f in found), found
    assert any(f.startswith("decoded/") for f in found), found
    assert any(f.startswith("weights/w-") for f in found), found
    assert any(f.startswith("weights/tfjs-tfjs-") for f in found), found
    assert not default.exists() or _files_under(default) == []
