"""Loaders: batch augmentation against per-image references, determinism, resume, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reslab.data import (
    EvalTransform,
    FolderLoader,
    ImageFolderDataset,
    TensorImageDataset,
    TensorLoader,
    TrainTransform,
    make_loader,
)
from reslab.data.transforms import crop_flip_params, random_crop_flip
from test_data_synthetic import make_patterns, write_image_folder


def _dataset(n=50, size=12, channels=3):
    x, y = make_patterns(n, size=size, channels=channels)
    return TensorImageDataset(torch.from_numpy(x), torch.from_numpy(y), [str(i) for i in range(10)])


def test_random_crop_flip_matches_per_image_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 9, 11), dtype=torch.uint8, generator=g)
    params = crop_flip_params(16, 3, True, g)
    out = random_crop_flip(images, params, 3)
    for i in range(16):
        dx, dy, flip = params[i].tolist()
        padded = F.pad(images[i], (3, 3, 3, 3))
        ref = padded[:, dy : dy + 9, dx : dx + 11]
        if flip:
            ref = torch.flip(ref, dims=[2])
        assert torch.equal(out[i], ref), i
    assert params[:, 2].sum() not in (0, 16)  # both branches exercised
    assert params[:, :2].min() == 0 and params[:, :2].max() == 6


def test_tensor_loader_eval_order_and_scaling():
    ds = _dataset(23)
    dl = TensorLoader(ds, 10)
    batches = list(dl)
    assert len(dl) == 3 == len(batches) and [len(b[1]) for b in batches] == [10, 10, 3]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32
    assert torch.equal(x, ds.images.float() / 255)
    assert torch.equal(torch.cat([b[1] for b in batches]), ds.labels)


def test_tensor_loader_train_is_a_permutation_with_deterministic_epochs():
    ds = _dataset(40)
    dl = TensorLoader(ds, 8, shuffle=True, augment=True, pad=2, drop_last=True, seed=3)
    dl.set_epoch(0)
    a = [(x.clone(), y.clone()) for x, y in dl]
    dl.set_epoch(0)
    b = list(dl)
    dl.set_epoch(1)
    c = list(dl)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    labels = torch.cat([y for _, y in a])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())  # each sample exactly once


def test_batches_from_start_equal_tail_of_full_epoch():
    ds = _dataset(45)
    dl = TensorLoader(ds, 6, shuffle=True, augment=True, drop_last=True, seed=9)
    dl.set_epoch(4)
    full = list(dl.batches(0))
    tail = list(dl.batches(5))
    assert len(tail) == len(full) - 5
    for (x1, y1), (x2, y2) in zip(full[5:], tail):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_shards_of_two_processes_make_the_single_process_batch():
    ds = _dataset(48)
    single = TensorLoader(ds, 8, shuffle=True, augment=True, drop_last=True, seed=1)
    ranks = [
        TensorLoader(
            ds, 4, shuffle=True, augment=True, drop_last=True, seed=1, rank=r, world_size=2
        )
        for r in range(2)
    ]
    for dl in (single, *ranks):
        dl.set_epoch(2)
    assert len(single) == len(ranks[0]) == 6
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))


def test_eval_shards_cover_every_sample_once():
    ds = _dataset(13)
    ys = []
    for r in range(2):
        ys += [y for _, y in TensorLoader(ds, 4, rank=r, world_size=2)]
    assert sorted(torch.cat(ys).tolist()) == sorted(ds.labels.tolist())


def test_eval_transform_matches_torchvision():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    img = torch.randint(0, 256, (3, 120, 90), dtype=torch.uint8)
    ours = EvalTransform(64, crop_pct=0.875, interpolation="bicubic")(img)
    ref = T.Compose(
        [
            T.Resize(int(64 / 0.875), interpolation=InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(64),
        ]
    )(img)
    assert torch.equal(ours, ref)


def test_train_transform_size_and_determinism():
    img = torch.randint(0, 256, (3, 100, 80), dtype=torch.uint8)
    t = TrainTransform(48)
    a = t(img, torch.Generator().manual_seed(5))
    b = t(img, torch.Generator().manual_seed(5))
    assert a.shape == (3, 48, 48) and torch.equal(a, b)


@pytest.fixture
def folder(tmp_path):
    g = np.random.default_rng(0)
    classes = {
        c: [g.integers(0, 256, (80, 72, 3), dtype=np.uint8) for _ in range(5)] for c in ("a", "b")
    }
    write_image_folder(tmp_path / "train", classes)
    return tmp_path / "train"


def test_folder_loader_same_batches_with_and_without_workers(folder):
    def run(workers):
        ds = ImageFolderDataset(folder)
        dl = make_loader(ds, 4, train=True, workers=workers, image_size=32, seed=7)
        assert isinstance(dl, FolderLoader)
        dl.set_epoch(1)
        return list(dl)

    a, b = run(0), run(2)
    assert len(a) == len(b) == 2
    for (x1, y1), (x2, y2) in zip(a, b):
        assert x1.shape == (4, 3, 32, 32) and x1.dtype == torch.float32
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_folder_loader_eval_uses_model_cfg(folder):
    ds = ImageFolderDataset(folder)
    cfg = {"input_size": (3, 40, 40), "crop_pct": 1.0, "interpolation": "bilinear"}
    dl = make_loader(ds, 3, train=False, workers=0, model_cfg=cfg)
    x, y = next(iter(dl))
    from reslab.data import load_image

    ref = EvalTransform(40, 1.0)(load_image(ds.paths[0])).float() / 255
    assert x.shape == (3, 3, 40, 40) and torch.equal(x[0], ref)
    assert len(dl) == 4  # 10 images, batches of 3, last one kept
