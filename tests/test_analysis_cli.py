"""`reslab plot decision-regions` and `reslab embedding` on tiny local data."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from reslab import create_model, save_checkpoint
from reslab.cli import main

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    """``train/`` and ``test/`` with two 8x8 RGB classes: bright top half vs bright bottom.

    Class folders sort alphabetically: label 0 is ``bottom``, 1 is ``top``.
    """
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # decoded-folder cache
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, n in (("train", 24), ("test", 8)):
        for label, name in enumerate(("top", "bottom")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (8, 8, 3))
                rows = slice(0, 4) if label == 0 else slice(4, 8)
                img[rows] += 180
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def tiny_checkpoint(tmp_path):
    model = create_model("resnet20", num_classes=2, width=0.25)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.25, -0.125]))
    return save_checkpoint(tmp_path / "tiny.safetensors", model)


def test_linear_demo_writes_png_and_says_what_it_shows(tmp_path, capsys):
    assert main(["plot", "decision-regions", "--head", "linear", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    png = tmp_path / "decision-regions-linear.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {png}" in out and "sectors around the origin" in out


def test_vgg_demo_on_a_folder(tiny_folder, tmp_path, capsys):
    args = ["plot", "decision-regions", "--head", "vgg", "--data", str(tiny_folder)]
    args += ["--epochs", "30", "--panels", "3", "--resolution", "16", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "decision-regions-vgg-axes.png").is_file()
    rows = re.findall(r"row '([^']+)': test accuracy ([\d.]+) %, ([\d.]+) % of each panel", out)
    assert [r[0] for r in rows][0] == "trained" and len(rows) == 3
    assert float(rows[0][1]) == 100.0  # the two classes are trivially separable
    assert float(rows[1][2]) == 0.0  # VGG init: zero biases, pure sectors
    assert "input dims i and j" in out


def test_model_head_regions_and_embedding_report(tiny_folder, tiny_checkpoint, tmp_path, capsys):
    args = ["plot", "decision-regions", "--model", str(tiny_checkpoint), "--data"]
    args += [str(tiny_folder), "--slices", "examples", "--panels", "2", "--resolution", "16"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "decision-regions-model-examples.png").is_file()
    assert "bias range +0.250 .. -0.125" not in out and "bias range -0.125 .. +0.250" in out
    assert "spanned by two inputs" in out

    assert main(["embedding", str(tiny_checkpoint), "--data", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    assert "2 classes x 16 dims" in out
    assert "min -0.1250 (class 1 (top))" in out  # folder classes sort: bottom, top


def _test_images(folder):
    """The test split by hand: PIL decode, 0-1 floats, labels in sorted folder order."""
    images, labels = [], []
    for label, name in enumerate(("bottom", "top")):
        for path in sorted((folder / "test" / name).glob("*.png")):
            images.append(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images).float() / 255, torch.tensor(labels)


def test_embedding_counts_the_top1_changes_the_bias_makes(tiny_folder, tmp_path, capsys):
    x, y = _test_images(tiny_folder)
    model = create_model("resnet20", num_classes=2, width=0.25).eval()
    with torch.no_grad():
        model.fc.bias.zero_()
        scores = model(x)  # the logits without a bias
    # A bias between two images' margins, near the median: dropping it flips some top-1s.
    margins = (scores[:, 1] - scores[:, 0]).sort().values
    shift = float(margins[7] + margins[8]) / 2
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([shift, 0.0]))
    with_bias = (scores + model.fc.bias).argmax(1)
    changed = int((with_bias != scores.argmax(1)).sum())
    assert 0 < changed < 16  # the count can be told from "none" and "all"
    path = save_checkpoint(tmp_path / "biased.safetensors", model)

    assert main(["embedding", str(path), "--data", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    assert f"top-1 changes without the bias on {changed} of 16 images" in out
    accuracy = [100 * float((pred == y).float().mean()) for pred in (with_bias, scores.argmax(1))]
    assert f"top-1 accuracy: {accuracy[0]:.2f} % with bias, {accuracy[1]:.2f} % without" in out


def test_embedding_without_data_prints_bias_only(capsys):
    assert main(["embedding", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "10 classes x 64 dims" in out and "top-1" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["plot", "decision-regions", "--model", "resnet20"], "needs --data"),
        (["plot", "decision-regions", "--head", "linear", "--resolution", "2"], "--resolution"),
        (["plot", "decision-regions", "--head", "linear", "--classes", "1"], "--classes"),
        (["plot", "decision-regions", "--head", "vgg", "--extent", "-1"], "--extent"),
        (["plot", "decision-regions", "--head", "vgg", "--limit", "0"], "--limit"),
        (["embedding", "resnet_nope"], "unknown model"),
        (["embedding", "resnet20", "--data", "/no/such/folder"], "unknown data set"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "plot" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_channel_mismatch_is_reported(tiny_folder, capsys):
    ckpt_model = create_model("resnet20", num_classes=2, in_chans=1, width=0.25)
    path = save_checkpoint(tiny_folder / "grey.safetensors", ckpt_model)
    assert main(["embedding", str(path), "--data", str(tiny_folder)]) == 2
    assert "1-channel images but the data has 3" in capsys.readouterr().err
