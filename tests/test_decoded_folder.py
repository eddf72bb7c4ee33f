"""The decoded-image cache for image folders and its whole-batch crops.

What "equal to the decode-per-epoch path" means here, exactly:
- the same decoded pixels at the presize: the cached uint8 images are bit-equal to decoding
  each file afresh and presizing it (and within 1 grey level of PIL's own bilinear resize);
- the same crop boxes and flips for the same seed: every sample's ``(top, left, height,
  width)`` and flip, recorded as the two loaders draw them, are identical, batch for batch;
- hence the same batches: the decode-per-epoch loader resamples each crop to uint8 (rounding),
  the cached loader keeps float32, so pixels agree to within 1/255.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from reslab.data import (
    DecodedFolderDataset,
    DecodedLoader,
    ImageFolderDataset,
    decode_image_folder,
    load_dataset,
    make_loader,
    resize_images,
    resized_crops,
)
from reslab.data import decoded as decoded_mod
from reslab.data.transforms import TrainTransform
from reslab.files import DamagedCacheError, read_array_cache

REPO = Path(__file__).resolve().parents[1]
SIZES = [(90, 120), (72, 96), (64, 64), (100, 80), (81, 95), (120, 90)]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("RESLAB_CACHE", str(root))
    return root


def _write_folder(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """Two classes of random-noise JPEGs of varied sizes (noise makes any misplaced pixel or
    crop visible)."""
    rng = np.random.default_rng(seed)
    for c in range(2):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = SIZES[(i + c) % len(SIZES)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                folder / f"{i}.jpg", quality=90
            )
    return root


def _entries(cache: Path) -> list[Path]:
    folder = cache / "decoded"
    return (
        sorted(p for p in folder.iterdir() if p.suffix == ".safetensors") if folder.is_dir() else []
    )


# ---------------------------------------------------------------- batch resampling
def test_resized_crops_equal_torchvision_resized_crop_per_image():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 70, 90, generator=g) * 255
    boxes, refs = [], []
    for i in range(12):
        h = int(torch.randint(5, 71, (), generator=g))
        w = int(torch.randint(5, 91, (), generator=g))
        top = int(torch.randint(0, 70 - h + 1, (), generator=g))
        left = int(torch.randint(0, 90 - w + 1, (), generator=g))
        boxes.append([top, left, h, w])
        refs.append(TF.resized_crop(images[i], top, left, h, w, [48, 48], antialias=True))
    boxes[0] = [0, 0, 70, 90]  # the whole image
    refs[0] = TF.resize(images[0], [48, 48], antialias=True)
    flips = torch.arange(12) % 3 == 0
    ref = torch.stack(refs)
    ref = torch.where(flips[:, None, None, None], ref.flip(-1), ref)
    got = resized_crops(images, torch.tensor(boxes), 48, flips)
    torch.testing.assert_close(got, ref, atol=2e-3, rtol=0)
    # uint8 input stays on the 0-255 scale
    as_uint8 = images.round().to(torch.uint8)
    torch.testing.assert_close(
        resized_crops(as_uint8, torch.tensor(boxes), 48), resized_crops(as_uint8.float(),
        torch.tensor(boxes), 48))  # fmt: skip
    full = resize_images(images[:3], 40)
    torch.testing.assert_close(full, TF.resize(images[:3], [40, 40], antialias=True), atol=2e-3,
                               rtol=0)  # fmt: skip


# ---------------------------------------------------------------- the cache
def test_decoded_pixels_are_the_files_presized(tmp_path, cache):
    root = _write_folder(tmp_path / "f" / "train")
    ds = decode_image_folder(root, 48, progress=False)
    assert isinstance(ds, DecodedFolderDataset) and ds.images.shape == (12, 3, 48, 48)
    assert ds.class_names == ["class0", "class1"] and ds.labels.tolist() == [0] * 6 + [1] * 6
    for i, path in enumerate(ds.paths):
        # Independent reference: PIL decodes, resizes the short side to 48 (bilinear, which
        # PIL antialiases) and crops the central square.
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            nw, nh = (48, int(48 * h / w)) if w <= h else (int(48 * w / h), 48)
            img = img.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - 48) / 2)), int(round((nw - 48) / 2))
            ref = np.asarray(img)[top : top + 48, left : left + 48].transpose(2, 0, 1)
        diff = (ds.images[i].int() - torch.from_numpy(ref.copy()).int()).abs()
        assert diff.max() <= 1, (path, int(diff.max()))


def test_cache_hit_changed_file_and_changed_size_give_new_entries(tmp_path, cache, monkeypatch):
    root = _write_folder(tmp_path / "f" / "train")
    first = decode_image_folder(root, 48, progress=False)
    assert len(_entries(cache)) == 1
    # Unchanged folder and size: read back, no image decoded.
    calls = []
    real = decoded_mod.load_image
    monkeypatch.setattr(decoded_mod, "load_image", lambda *a: calls.append(a) or real(*a))
    again = decode_image_folder(root, 48, progress=False)
    assert calls == [] and torch.equal(again.images, first.images)
    assert len(_entries(cache)) == 1
    # A changed file (new pixels, new modification time): a new entry with the new pixels.
    changed = root / "class1" / "2.jpg"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(changed)
    os.utime(changed, ns=(1, 10**18))
    third = decode_image_folder(root, 48, progress=False)
    assert len(_entries(cache)) == 2 and len(calls) == 12
    k = third.paths.index(changed)
    assert (third.images[k].int() - 200).abs().max() <= 1
    assert torch.equal(third.images[:k], first.images[:k])
    # Another presize: another entry.
    fourth = decode_image_folder(root, 40, progress=False)
    assert len(_entries(cache)) == 3 and fourth.images.shape[-1] == 40
    # An added file: another entry, one more image.
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "class0" / "new.jpg")
    assert len(decode_image_folder(root, 40, progress=False)) == 13
    assert len(_entries(cache)) == 4


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":  # one pixel byte, far from the header
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(b"not a safetensors file")


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage"])
def test_a_damaged_entry_is_named_in_one_line_and_decoded_again(tmp_path, cache, capsys, how):
    root = _write_folder(tmp_path / "f" / "train")
    good = decode_image_folder(root, 48, progress=False)
    (entry,) = _entries(cache)
    key = entry.stem.rsplit("-", 1)[1]
    _damage(entry, how)
    with pytest.raises(DamagedCacheError) as err:
        read_array_cache(entry, key)
    assert str(entry) in str(err.value) and "\n" not in str(err.value)
    capsys.readouterr()
    rebuilt = decode_image_folder(root, 48, progress=False)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "damaged cache entry" in lines[0] and "decoding" in lines[0]
    assert torch.equal(rebuilt.images, good.images)
    assert read_array_cache(entry, key) is not None  # replaced by a good entry


def test_an_entry_under_another_key_is_refused(tmp_path, cache):
    root = _write_folder(tmp_path / "f" / "train")
    decode_image_folder(root, 48, progress=False)
    (entry,) = _entries(cache)
    with pytest.raises(DamagedCacheError, match="not the cache entry for key 0123"):
        read_array_cache(entry, "0123456789abcdef")


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import safetensors.numpy
    from reslab.data import decode_image_folder

    def half_then_die(arrays, path, metadata=None):
        with open(path, "wb") as fh:
            fh.write(b"partial" * 1000)
            fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    safetensors.numpy.save_file = half_then_die
    decode_image_folder(sys.argv[1], 48, progress=False)
    """
)


def test_a_writer_killed_mid_write_leaves_no_entry(tmp_path, cache):
    root = _write_folder(tmp_path / "f" / "train")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "RESLAB_CACHE": str(cache)}
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _entries(cache) == []  # only a temporary file, never a half entry under its name
    assert [p.name.endswith(".tmp") for p in (cache / "decoded").iterdir()] == [True]
    ds = decode_image_folder(root, 48, progress=False)
    assert len(_entries(cache)) == 1 and len(ds) == 12


# ---------------------------------------------------------------- loaders
def _record_draws(monkeypatch) -> list:
    seen = []
    real = TrainTransform.draw

    def draw(self, h, w, g):
        out = real(self, h, w, g)
        seen.append((h, w, out))
        return out

    monkeypatch.setattr(TrainTransform, "draw", draw)
    return seen


@pytest.mark.parametrize("seed", [0, 5])
def test_cached_batches_equal_decode_per_epoch_batches(tmp_path, cache, monkeypatch, seed):
    root = _write_folder(tmp_path / "f" / "train")
    decoded = decode_image_folder(root, 48, progress=False)
    files = ImageFolderDataset(root)
    # The same pixels at the presize.
    fresh = make_loader(files, 4, train=False, image_size=48, presize=48, workers=0)
    assert torch.equal(torch.cat([x for x, _ in fresh]), decoded.images.float() / 255)
    seen = _record_draws(monkeypatch)
    opts = {"train": True, "seed": seed, "image_size": 32, "min_scale": 0.5, "square_crops": True}
    cached_dl = make_loader(decoded, 4, **opts)
    files_dl = make_loader(files, 4, presize=48, workers=0, **opts)
    assert isinstance(cached_dl, DecodedLoader)
    for epoch in (0, 1):
        cached_dl.set_epoch(epoch)
        files_dl.set_epoch(epoch)
        seen.clear()
        cached = list(cached_dl)
        cached_draws = list(seen)
        seen.clear()
        per_file = list(files_dl)
        assert seen == cached_draws and len(seen) == 12  # the same boxes and flips
        assert all(h == w == 48 and b[2] == b[3] for h, w, (b, _) in seen)  # square crops
        for (xa, ya), (xb, yb) in zip(cached, per_file, strict=True):
            assert torch.equal(ya, yb) and xa.shape == (4, 3, 32, 32)
            assert (xa - xb).abs().max() <= 1 / 255 + 1e-6
    # Evaluation: the whole presized image, resized.
    ev_a = make_loader(decoded, 5, train=False, image_size=32)
    ev_b = make_loader(files, 5, train=False, image_size=32, presize=48, workers=0)
    for (xa, ya), (xb, yb) in zip(ev_a, ev_b, strict=True):
        assert torch.equal(ya, yb) and (xa - xb).abs().max() <= 1 / 255 + 1e-6


def test_crops_differ_between_seeds_and_epochs(tmp_path, cache):
    decoded = decode_image_folder(_write_folder(tmp_path / "f" / "train"), 48, progress=False)
    opts = {"train": True, "image_size": 32, "min_scale": 0.5}
    a, b = make_loader(decoded, 12, seed=0, **opts), make_loader(decoded, 12, seed=1, **opts)
    (xa, _), (xb, _) = next(iter(a)), next(iter(b))
    a.set_epoch(1)
    (xa1, _) = next(iter(a))
    assert not torch.equal(xa, xb) and not torch.equal(xa, xa1)


def test_resume_mid_epoch_and_process_shards(tmp_path, cache):
    decoded = decode_image_folder(_write_folder(tmp_path / "f" / "train"), 48, progress=False)
    tf = TrainTransform(32, (0.5, 1.0), (3 / 4, 4 / 3), "bilinear")
    whole = DecodedLoader(decoded, 4, size=32, transform=tf, shuffle=True, seed=3)
    whole.set_epoch(2)
    full = list(whole)
    tail = list(whole.batches(start=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[1:], tail, strict=True))
    shards = [DecodedLoader(decoded, 2, size=32, transform=tf, shuffle=True, seed=3, rank=r,
                            world_size=2) for r in (0, 1)]  # fmt: skip
    for s in shards:
        s.set_epoch(2)
    for (x, y), (x0, y0), (x1, y1) in zip(full, *shards, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_load_dataset_presize_gives_the_decoded_folder(tmp_path, cache):
    root = tmp_path / "f"
    _write_folder(root / "train")
    _write_folder(root / "val", per_class=2, seed=1)
    train = load_dataset(root, "train", presize=48, progress=False)
    test = load_dataset(root, "test", presize=48, progress=False)
    assert isinstance(train, DecodedFolderDataset) and isinstance(test, DecodedFolderDataset)
    assert len(train) == 12 and len(test) == 4 and test.class_names == train.class_names
    sub = train.subset([0, 7])
    assert torch.equal(sub.images, train.images[[0, 7]]) and sub.labels.tolist() == [0, 1]
    assert isinstance(load_dataset(root, "train", progress=False), ImageFolderDataset)
    # Small images too are presized when asked (without presize they load as a tensor).
    small = tmp_path / "small"
    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        (small / "train" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            small / "train" / c / "0.png"
        )
    tiny = load_dataset(small, "train", presize=48, progress=False)
    assert isinstance(tiny, DecodedFolderDataset) and tiny.images.shape == (2, 3, 48, 48)


def test_reslab_train_presize_trains_from_the_cache(tmp_path, cache):
    from reslab.cli import main
    from reslab.weights import load_checkpoint

    root = tmp_path / "f"
    _write_folder(root / "train")
    _write_folder(root / "val", per_class=2, seed=1)
    common = ["train", "--data", str(root), "--model", "fastbook_plain_cnn", "--size", "32",
              "--presize", "48", "--epochs", "1", "--bs", "4", "--threads", "1",
              "--no-progress", "--no-report", "--min-scale", "0.5", "--square-crops"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "cached")]) == 0
    assert len(_entries(cache)) == 2  # train/ and val/, decoded once
    model = load_checkpoint(tmp_path / "cached" / "model.safetensors")
    data = model.config.data
    assert data.input_size == (3, 32, 32) and data.crop_pct == 1.0
    assert main([*common, "--no-cache-images", "--out", str(tmp_path / "files")]) == 0
    assert len(_entries(cache)) == 2  # decoding every epoch writes no entry


def test_imagenette_by_name_from_its_two_224_archives(tmp_path, cache, monkeypatch):
    import hashlib
    import tarfile

    from reslab.data import imagenette
    from reslab.data.locate import DataNotFoundError
    from reslab.files import DownloadError

    monkeypatch.delenv("RESLAB_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="imagenette2-160"):
        imagenette.find_imagenette(empty)
    shared = tmp_path / "shared"
    shared.mkdir()
    digests = {}
    for split, per_class in (("train", 3), ("val", 1)):
        src = _write_folder(tmp_path / "src" / "imagenette2-224sq" / split, per_class)
        name = f"imagenette2-224sq-{split}.tar.gz"
        with tarfile.open(shared / name, "w:gz") as tar:
            tar.add(src, arcname=f"imagenette2-224sq/{split}")
        digests[split] = (name, hashlib.sha256((shared / name).read_bytes()).hexdigest())
    # The real archives' digests are pinned; these test archives differ, so they are refused.
    with pytest.raises(DownloadError, match="does not match"):
        imagenette.find_imagenette(shared)
    monkeypatch.setitem(imagenette.SPLIT_ARCHIVES, "imagenette2-224sq", digests)
    root = imagenette.find_imagenette(shared)
    assert sorted(p.name for p in root.iterdir()) == ["train", "val"]
    assert imagenette.find_imagenette(shared) == root  # joined once
    train = load_dataset("imagenette", "train", data_dir=shared, presize=48, progress=False)
    val = load_dataset("imagenette", "test", data_dir=shared, progress=False)
    assert len(train) == 6 and len(val) == 2 and val.class_names == ["class0", "class1"]
    # An extracted fastai copy takes precedence over the archives.
    _write_folder(shared / "imagenette2-160" / "train", 1)
    _write_folder(shared / "imagenette2-160" / "val", 1)
    assert imagenette.find_imagenette(shared) == shared / "imagenette2-160"


def test_presize_without_the_cache_on_small_images_is_one_line(tmp_path, cache, capsys):
    """Images of 64 px or less load into memory as they are; --presize --no-cache-images
    would silently train on them unpresized, so it is refused before any work."""
    from reslab.cli import main

    root = tmp_path / "small"
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                root / split / c / "0.png"
            )
    out = tmp_path / "run"
    args = ["train", "--data", str(root), "--presize", "48", "--no-cache-images", "--epochs", "1",
            "--bs", "2", "--no-progress", "--no-report", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no-cache-images" in err[0]
    assert not (out / "model.safetensors").exists()
