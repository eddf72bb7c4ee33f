"""Data sets: on-disk formats, search order, class subsets, splits, image folders."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_data_dir
from reslab.data import (
    DataNotFoundError,
    ImageDecodeError,
    ImageFolderDataset,
    TensorImageDataset,
    load_dataset,
    select_classes,
    split_indices,
)
from reslab.data import fashion_mnist as fm
from reslab.data.fashion_mnist import read_idx
from test_data_synthetic import (
    make_patterns,
    write_fake_cifar_pickles,
    write_fake_fashion_mnist,
    write_idx,
    write_image_folder,
)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # No test may read the user's cache or data folders, or go online.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.setenv("RESLAB_OFFLINE", "1")


# ---------------------------------------------------------------- idx / Fashion-MNIST
def test_read_idx_gz_and_plain(tmp_path):
    x, _ = make_patterns(5)
    write_idx(tmp_path / "a-idx3-ubyte.gz", x[:, 0])
    write_idx(tmp_path / "a-idx3-ubyte", x[:, 0])
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), x[:, 0])
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), x[:, 0])


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as fh:
        fh.write(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    x, _ = make_patterns(4)
    write_idx(tmp_path / "t.gz", x[:, 0])
    raw = gzip.decompress((tmp_path / "t.gz").read_bytes())
    with gzip.open(tmp_path / "t.gz", "wb") as fh:
        fh.write(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t.gz")


def test_fashion_mnist_from_data_dir(tmp_path):
    folder = write_fake_fashion_mnist(tmp_path / "d" / "fashion-mnist", 30, 20)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "d")
    x, y = make_patterns(30, seed=1)
    assert isinstance(ds, TensorImageDataset)
    assert ds.images.shape == (30, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(x[:, 0]))
    assert torch.equal(ds.labels, torch.from_numpy(y))
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10
    assert len(load_dataset("fashion-mnist", "test", data_dir=folder)) == 20


def test_fashion_mnist_search_order_env_then_missing(tmp_path, monkeypatch):
    write_fake_fashion_mnist(tmp_path / "env", 12, 8)
    write_fake_fashion_mnist(tmp_path / "arg", 14, 8)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("fashion-mnist")) == 12  # $RESLAB_DATA
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path / "arg")) == 14  # --data-dir first
    monkeypatch.delenv("RESLAB_DATA")
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 1000))
    raw = tmp_path / "t10k-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress((DEBIAN / "t10k-images-idx3-ubyte.gz").read_bytes()))
    assert torch.equal(ds.images[:, 0], read_sn3_pascalvincent_tensor(str(raw)))


# ---------------------------------------------------------------- CIFAR-10
def test_cifar_pickles(tmp_path):
    arrays = write_fake_cifar_pickles(tmp_path)
    train = load_dataset("cifar10", data_dir=tmp_path)
    test = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert len(train) == 100 and len(test) == 20
    data, labels = arrays["data_batch_2"]
    # The official layout: 3072 bytes per row = R plane, G plane, B plane, each 32x32 row-major.
    ref = torch.from_numpy(data.reshape(-1, 3, 32, 32))
    assert torch.equal(train.images[20:40], ref)
    assert torch.equal(train.labels[20:40], torch.from_numpy(labels))
    assert train.class_names[2] == "bird"


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    write_fake_cifar_pickles(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def _cifar_jpg_tree(root: Path, per_class: int = 2) -> dict[str, np.ndarray]:
    from reslab.data.cifar import CIFAR10_CLASSES

    g = np.random.default_rng(3)
    made = {}
    for split in ("train", "test"):
        classes = {
            c: [g.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(per_class)]
            for c in CIFAR10_CLASSES
        }
        write_image_folder(root / "cifar10-jpg" / split, classes, fmt="png")
        made[split] = classes
    return made


def test_cifar_class_folder_layout_from_tarball(tmp_path, monkeypatch):
    from reslab.data import cifar
    from reslab.files import DownloadError, file_sha256

    made = _cifar_jpg_tree(tmp_path / "src")
    data = tmp_path / "data"
    data.mkdir()
    archive = data / "cifar10-jpg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar10-jpg", arcname="cifar10-jpg")
    # A file under a known archive's name but with other contents is refused, not extracted.
    with pytest.raises(DownloadError, match="does not match the published"):
        load_dataset("cifar10", "test", data_dir=data)
    assert not (tmp_path / "cache" / "reslab" / "extracted").exists()
    known = (cifar.JPEG_DIR, ("sha256", file_sha256(archive)))
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10-jpg.tar.gz", known)
    # Something of the user's in the cache under the archive's folder name is never replaced.
    mine = tmp_path / "cache" / "reslab" / "cifar10-jpg" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    ds = load_dataset("cifar10", "test", data_dir=data, classes=["bird", "airplane"])
    assert mine.read_text() == "mine"
    # Extracted into the cache, never beside the archive.
    assert not (data / "cifar10-jpg").exists()
    extracted = list((tmp_path / "cache" / "reslab" / "extracted").glob("cifar10-jpg-*"))
    assert len(extracted) == 1 and (extracted[0] / "cifar10-jpg" / "test" / "bird").is_dir()
    assert ds.class_names == ["bird", "airplane"]
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 1]
    birds = ds.images[ds.labels == 0]
    ref = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in made["test"]["bird"]])
    assert torch.equal(birds, ref)  # PNG is lossless: pixels must match exactly


# ---------------------------------------------------------------- subsets and splits
def test_select_classes_relabels_in_given_order():
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    ds = TensorImageDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["a", "b", "c"])
    sub = select_classes(ds, ["c", "a"])
    assert sub.class_names == ["c", "a"]
    assert sub.labels.tolist() == [1, 0, 1, 0]
    assert sub.images[:, 0, 0, 0].tolist() == [0, 2, 3, 5]
    assert select_classes(ds, [1]).labels.tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown class 'z'"):
        select_classes(ds, ["z"])


def test_split_indices_partition():
    train, valid = split_indices(103, 0.2, seed=5)
    assert len(valid) == 21 and len(train) == 82
    assert sorted(torch.cat([train, valid]).tolist()) == list(range(103))
    again, _ = split_indices(103, 0.2, seed=5)
    assert torch.equal(train, again)


def test_valid_pct_split_of_named_dataset(tmp_path):
    write_fake_fashion_mnist(tmp_path, 50, 10)
    tr = load_dataset("fashion-mnist", "train", data_dir=tmp_path, valid_pct=0.2)
    va = load_dataset("fashion-mnist", "valid", data_dir=tmp_path, valid_pct=0.2)
    assert len(tr) == 40 and len(va) == 10
    rows = {bytes(x.numpy()) for x in torch.cat([tr.images, va.images])}
    assert len(rows) == 50  # disjoint, together the whole training set
    with pytest.raises(ValueError, match="valid_pct"):
        load_dataset("fashion-mnist", "valid", data_dir=tmp_path)


def test_stats_match_numpy():
    x, y = make_patterns(40, channels=3, size=8)
    ds = TensorImageDataset(torch.from_numpy(x), torch.from_numpy(y), [str(i) for i in range(10)])
    mean, std = ds.stats()
    ref = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-7)


# ---------------------------------------------------------------- image folders
def _photo(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_large_image_folder_streams_and_converts_modes(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root / "train", {"cat": [_photo(80, 100, 0)], "dog": [_photo(90, 70, 1)]})
    (root / "val" / "cat").mkdir(parents=True)
    Image.fromarray(_photo(70, 70, 2)).convert("CMYK").save(root / "val" / "cat" / "cmyk.jpg")
    Image.fromarray(_photo(70, 70, 3)[:, :, 0]).save(root / "val" / "cat" / "grey.png")
    rgba = np.dstack([_photo(70, 70, 4), np.full((70, 70), 128, np.uint8)])
    (root / "val" / "dog").mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(root / "val" / "dog" / "alpha.png")
    ds = load_dataset(root, "train")
    assert isinstance(ds, ImageFolderDataset)
    assert ds.class_names == ["cat", "dog"]
    img, label = ds[1]
    assert label == 1 and img.shape == (3, 90, 70)
    val = load_dataset(root, "test")  # test falls back to val/
    shapes = {tuple(val[i][0].shape) for i in range(len(val))}
    assert shapes == {(3, 70, 70)}


@pytest.mark.parametrize("side", [16, 80])  # held in memory / decoded per sample
def test_a_val_folder_lacking_a_class_keeps_the_train_labels(tmp_path, side):
    # train/{a,b,c}, val/{a,c}: val's "c" images are class 2 as in train, not 1 (val's own
    # sorted folder list would shift them onto "b"); a class train lacks is refused.
    root = tmp_path / "imgs"
    photos = {c: [_photo(side, side, i)] for i, c in enumerate("abc")}
    write_image_folder(root / "train", photos)
    write_image_folder(root / "val", {"a": photos["a"], "c": photos["c"]})
    val = load_dataset(root, "test")
    assert val.class_names == ["a", "b", "c"]
    assert sorted(int(val[i][1]) for i in range(len(val))) == [0, 2]
    write_image_folder(root / "val", {"d": [_photo(side, side, 9)]})
    with pytest.raises(ValueError, match="does not have: d"):
        load_dataset(root, "test")


def test_loaders_on_one_image_folder_keep_their_own_transforms(tmp_path):
    # The recipe builds a train-eval loader and then the training loader on the same data
    # set: the first must go on yielding its eval transform's images, not random crops.
    from reslab.data import make_loader
    from reslab.data.transforms import eval_transform_from_cfg

    root = tmp_path / "imgs"
    write_image_folder(root / "train", {c: [_photo(90, 120, i)] for i, c in enumerate("ab")})
    ds = load_dataset(root, "train")
    cfg = {"input_size": (3, 64, 64), "crop_pct": 0.875, "interpolation": "bilinear"}
    evaluation = make_loader(ds, 2, train=False, workers=0, model_cfg=cfg)
    make_loader(ds, 2, train=True, workers=0, model_cfg=cfg)
    images, _ = next(iter(evaluation))
    expected = eval_transform_from_cfg(cfg, 64)(ds[0][0], torch.Generator())
    torch.testing.assert_close(images[0], expected.float() / 255)


def test_unreadable_image_named_or_skipped(tmp_path):
    root = tmp_path / "imgs"
    write_image_folder(root / "train", {"a": [_photo(80, 80, 0)], "b": [_photo(80, 80, 1)]})
    (root / "train" / "b" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        load_dataset(root, "train")
    ds = load_dataset(root, "train", on_error="skip")
    assert len(ds) == 2 and [p.name for p in ds.skipped] == ["broken.jpg"]


def test_small_image_folder_in_memory_and_cached(tmp_path):
    root = tmp_path / "small"
    arrays = {"x": [_photo(32, 32, i) for i in range(3)], "y": [_photo(32, 32, 9)]}
    write_image_folder(root / "train", arrays)
    ds = load_dataset(root, "train", progress=False)
    assert isinstance(ds, TensorImageDataset) and ds.images.shape == (4, 3, 32, 32)
    assert torch.equal(ds.images[3], torch.from_numpy(arrays["y"][0]).permute(2, 0, 1))
    cached = list((tmp_path / "cache" / "reslab" / "decoded").glob("*.safetensors"))
    assert len(cached) == 1
    shutil.rmtree(root / "train" / "y")  # a changed folder must not reuse the stale cache
    assert len(load_dataset(root, "train", progress=False)) == 3


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown data set 'mnist-ish'"):
        load_dataset("mnist-ish")


@pytest.mark.slow
@pytest.mark.skipif(shared_data_dir() is None, reason="shared data folder not available")
def test_real_cifar10_jpg_copy(monkeypatch, session_cache):
    monkeypatch.setenv("RESLAB_CACHE", str(session_cache))  # extracted once per run
    ds = load_dataset("cifar10", "test", data_dir=shared_data_dir(), classes=["airplane", "bird"])
    assert ds.images.shape == (2000, 3, 32, 32)
    mean = ds.images.double().mean().item() / 255
    assert 0.4 < mean < 0.6
