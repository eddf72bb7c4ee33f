"""reslab's own weights shipped in the package: small, verified, usable offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import reslab
from conftest import FASHION_MNIST_DIR, read_idx_gz, shared_data_dir
from reslab.weights import WeightsError, read_checkpoint_config
from reslab.weights.catalog import ASSETS, list_tags

MANIFEST = json.loads((ASSETS / "manifest.json").read_text())


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_shipped_file_is_small_verified_and_documented(entry):
    path = ASSETS / entry["file"]
    assert path.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    state = read_checkpoint_config(path)["state"]
    assert state["recipe"] == entry["recipe"] and entry["recipe"].startswith("reslab train ")
    top1 = next(iter(entry["metrics"].values()))
    assert state["metrics"]["test_accuracy"] == pytest.approx(top1 / 100)
    assert f"{entry['model']}@{entry['tag']}" in {t.key for t in list_tags()}


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_tag_builds_the_saved_model(entry):
    model = reslab.create_model(entry["model"], pretrained=entry["tag"]).eval()
    saved = reslab.load_checkpoint(ASSETS / entry["file"]).eval()
    x = torch.rand(2, model.in_chans, *model.default_cfg["input_size"][1:])
    torch.testing.assert_close(model(x), saved(x))
    assert len(model.default_cfg["class_names"]) == model.num_classes


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from reslab.weights import catalog as tags

    entry = MANIFEST[0]
    copy = tmp_path / entry["file"]
    shutil.copy(ASSETS / entry["file"], copy)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(tags, "ASSETS", tmp_path)
    with pytest.raises(WeightsError, match="corrupt"):
        tags.find_tag(f"{entry['model']}@{entry['tag']}").fetch()


# Each tag's real test set: Fashion-MNIST's original idx files (FASHION_MNIST_DIR), and the
# JPEG copy of CIFAR-10 that the CIFAR weights were trained and measured on.
CIFAR10_ARCHIVE = "cifar10-jpg.tar.gz"

# The manifest's figures are fp32 top-1 counts out of 10,000 images, so two decimals are exact
# (93.66 % = 9,366 images); they are reproduced exactly here, whatever the batch size or memory
# format. A CPU with other kernels sums in another order and could flip an image on a near
# tie (bf16 inference flips 1 and 4): up to two images (0.02 points) are allowed for that.
FLIPS = 2


def _test_data_dir(tag: str) -> Path:
    if tag == "reslab-fashion-mnist":
        if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
            pytest.fail(
                f"no Fashion-MNIST in {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist"
            )
        return FASHION_MNIST_DIR
    shared = shared_data_dir()
    if shared is None or not (shared / CIFAR10_ARCHIVE).is_file():
        pytest.skip(f"no ../shared/data/{CIFAR10_ARCHIVE} (or $RESLAB_SHARED_DATA) on this machine")
    return shared


def _stated_correct(entry) -> int:
    (percent,) = entry["metrics"].values()
    return round(percent * 100)  # of 10,000 test images


@pytest.fixture
def fresh_env(session_cache, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(session_cache))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.setenv("RESLAB_OFFLINE", "1")


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_shipped_weights_score_their_documented_accuracy(entry, fresh_env, one_thread):
    from reslab.data import load_dataset, make_loader

    data_dir = _test_data_dir(entry["tag"])
    test = load_dataset(entry["tag"].removeprefix("reslab-"), "test", data_dir=data_dir,
                        download=False, progress=False)  # fmt: skip
    labels = test.labels
    assert len(test) == 10_000 and torch.bincount(labels).tolist() == [1_000] * 10
    if entry["tag"] == "reslab-fashion-mnist":  # the very images of the original files
        images = read_idx_gz(data_dir / "t10k-images-idx3-ubyte.gz")
        assert torch.equal(test.images[:, 0], torch.from_numpy(images.copy()))
        assert labels.tolist() == read_idx_gz(data_dir / "t10k-labels-idx1-ubyte.gz").tolist()
    model = reslab.create_model(entry["model"], pretrained=entry["tag"]).eval()
    correct = seen = 0
    with torch.inference_mode():
        # Small batches on one thread: about 6 CPU seconds per 10,000 images here, and no
        # idle OpenMP threads spinning when the machine is busy.
        for x, y in make_loader(test, 100, train=False):
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    assert seen == 10_000
    assert abs(correct - _stated_correct(entry)) <= FLIPS, (correct, entry["metrics"])


@pytest.mark.slow
@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_reslab_eval_reproduces_the_documented_accuracy(entry, fresh_env, tmp_path, capsys):
    """The same figure end to end through `reslab eval MODEL@TAG`, as a user would check it."""
    from reslab.cli import main

    data = entry["tag"].removeprefix("reslab-")
    spec = f"{entry['model']}@{entry['tag']}"
    args = ["eval", spec, "--data", data, "--data-dir", str(_test_data_dir(entry["tag"]))]
    assert main([*args, "--workers", "0", "--json", "--out", str(tmp_path / "cm.png")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 10_000
    correct = round(result["accuracy"] * 10_000)
    assert abs(correct - _stated_correct(entry)) <= FLIPS, (correct, entry["metrics"])
