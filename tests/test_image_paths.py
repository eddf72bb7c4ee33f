"""Images read by path (predict, explain, eval folders) and explain's --out: a FIFO or device
given as an image is one line, never a hang; explain checks --out before it loads anything;
``top_losses.json`` names the file of each image of a small-image folder.

References are computed here: the files' pixels decoded with PIL and run through the model
directly; hangs are caught by an alarm that raises an exception the commands do not catch.
"""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import reslab
from reslab.cli import main
from reslab.data import TensorImageDataset, load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ("ant", "bee")


class Hung(BaseException):
    """Raised by the alarm: not an OSError/ValueError, so no command turns it into a line."""


@contextmanager
def no_hang(seconds: int = 20):
    def ring(signum, frame):
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=len(CLASSES))
    return reslab.save_checkpoint(path, model)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``ROOT/test/<class>/NN.png``: 8 random 32-px RGB images per class."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / "test" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "test" / name / f"{i:02d}.png")
    return root


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


# ---------------------------------------------------------------------------- top_losses.json
def test_top_losses_of_a_small_image_folder_name_their_files(ckpt, folder, tmp_path, capsys):
    argv = ["eval", str(ckpt), "--data", str(folder), "--out", str(tmp_path / "cm.png")]
    assert main([*argv, "--top-losses", "4", "--workers", "0"]) == 0
    records = json.loads((tmp_path / "top_losses.json").read_text())
    assert records, "a random 2-class model gets some of 16 images wrong"
    model = reslab.load_checkpoint(ckpt).eval()
    for r in records:
        path = folder / "test" / CLASSES[r["true"]]
        assert os.path.dirname(r["file"]) == str(path.resolve())  # its true class's folder
        with Image.open(r["file"]) as img:
            x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        with torch.no_grad():
            logits = model(x[None].float().div(255))[0]
        assert int(logits.argmax()) == r["pred"] != r["true"]
        loss = F.cross_entropy(logits[None], torch.tensor([r["true"]]))
        assert r["loss"] == pytest.approx(float(loss), abs=1e-4)


def test_a_small_image_folder_keeps_its_paths_through_subsets(folder):
    ds = load_dataset(str(folder), "test", progress=False)
    assert isinstance(ds, TensorImageDataset) and len(ds.paths) == len(ds) == 16
    sub = ds.subset([15, 0, 9])
    for i, path in zip([15, 0, 9], sub.paths):
        assert path == ds.paths[i]
        with Image.open(path) as img:
            pixels = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(pixels, ds.images[i])  # the path is the file of that image
    assert TensorImageDataset(ds.images, ds.labels, CLASSES).paths is None


# ---------------------------------------------------------------------------- FIFOs and devices
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("verb", ["predict", "explain"])
def test_a_fifo_given_as_an_image_is_one_line_not_a_hang(verb, ckpt, folder, tmp_path, capsys):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    good = str(folder / "test" / "ant" / "00.png")
    argv = [verb, str(ckpt), str(fifo), good]
    if verb == "explain":
        argv += ["--out", str(tmp_path / "maps"), "--topk", "1"]
    with no_hang():
        assert main(argv) == 1  # the other image is still done
    line = _one_line_error(capsys, str(fifo), "not a regular file", "FIFO")
    assert line.startswith(f"reslab {verb}: error:")
    if verb == "explain":
        assert [p.name for p in (tmp_path / "maps").iterdir()] == ["00-gradcam.png"]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_given_as_an_image_is_one_line(ckpt, capsys):
    # /dev/zero never ends: reading it as an image would fill the memory.
    with no_hang():
        assert main(["predict", str(ckpt), "/dev/zero"]) == 1
    _one_line_error(capsys, "/dev/zero", "not a regular file", "character device")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_an_image_folder_is_left_out(ckpt, folder, tmp_path, capsys):
    # Named to sort first: the folder's first image is probed for its size.
    root = tmp_path / "data"
    (root / "test").mkdir(parents=True)
    for name in CLASSES:
        os.symlink(folder / "test" / name, root / "test" / name)
    (root / "test" / "aardvark").mkdir()
    os.mkfifo(root / "test" / "aardvark" / "00.png")
    (root / "test" / "aardvark" / "01.png").write_bytes((folder / "test/ant/01.png").read_bytes())
    with no_hang():
        ds = load_dataset(str(root), "test", progress=False)
    assert len(ds) == 17 and ds.class_names == ["aardvark", *CLASSES]


# ---------------------------------------------------------------------------- explain --out
def _no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("reslab.cli.explain_cmd.resolve_model", refuse)


@pytest.mark.parametrize("images", ["good", "missing"])
def test_explain_checks_out_before_loading_anything(
    images, ckpt, folder, tmp_path, capsys, monkeypatch
):
    _no_model(monkeypatch)
    image = folder / "test/ant/00.png" if images == "good" else tmp_path / "missing.png"
    not_a_folder = tmp_path / "maps.txt"
    not_a_folder.write_text("notes")
    assert main(["explain", str(ckpt), str(image), "--out", str(not_a_folder)]) == 2
    _one_line_error(capsys, str(not_a_folder), "not a folder")
    assert not_a_folder.read_text() == "notes"


def test_explain_refuses_a_map_name_that_is_a_folder(ckpt, folder, tmp_path, capsys, monkeypatch):
    _no_model(monkeypatch)
    (tmp_path / "00-gradcam.png").mkdir()  # where 00.png's map would go
    argv = ["explain", str(ckpt), str(folder / "test/ant/00.png"), "--out", str(tmp_path)]
    assert main(argv) == 2
    _one_line_error(capsys, "00-gradcam.png", "is a folder")
