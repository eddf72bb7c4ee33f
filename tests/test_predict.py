"""``reslab predict``: any image mode, the model's resize/crop, class names, per-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import reslab
from reslab.cli import main
from reslab.inference import class_names_of, predict_files, restrict_class_index

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = reslab.create_model("resnet20")
    model.set_data_config(class_names=tuple(NAMES), crop_pct=0.875)
    return reslab.save_checkpoint(tmp_path_factory.mktemp("m") / "m.safetensors", model)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "rgb.png")
    gray = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    Image.fromarray(gray).save(d / "gray.png")
    Image.fromarray(np.repeat(gray[:, :, None], 3, 2)).save(d / "gray_as_rgb.png")
    rgba = np.concatenate([rgb, np.full((40, 56, 1), 255, np.uint8)], 2)
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(rgb).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(gray.astype(np.uint16) * 257).save(d / "sixteen.png")
    # EXIF orientation 6: the stored pixels must be rotated 90° clockwise to display.
    img = Image.fromarray(rgb).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(d / "exif.jpg", exif=exif, quality=100)
    Image.fromarray(rgb).save(d / "upright.jpg", quality=100)
    (d / "notes.txt").write_text("not an image")
    data = (d / "rgb.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    return d


def _reference_probs(model, hwc: np.ndarray) -> torch.Tensor:
    """Probabilities by hand: torchvision resize of the short side to 32/0.875 (antialiased
    bilinear on uint8, as the checkpoint's config says), centre-crop 32, a bare forward."""
    img = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)
    x = TF.center_crop(TF.resize(img, [int(32 / 0.875)], antialias=True), [32, 32])
    with torch.no_grad():
        return model(x[None].float() / 255).softmax(-1)[0]


def test_probabilities_follow_the_models_resize_and_crop(ckpt, images):
    model = reslab.load_checkpoint(ckpt).eval()
    got = predict_files(model, [images / "rgb.png"], topk=3)[0]
    probs = _reference_probs(model, np.array(Image.open(images / "rgb.png").convert("RGB")))
    top = probs.topk(3)
    assert [c for c, _, _ in got.classes] == top.indices.tolist()
    assert [n for _, n, _ in got.classes] == [NAMES[i] for i in top.indices]
    torch.testing.assert_close(torch.tensor([p for _, _, p in got.classes]), top.values)


def test_exif_orientation_is_applied(ckpt, images):
    """The file's stored pixels, rotated by hand as its EXIF tag says, give the same
    probabilities to float32 precision.

    Comparing with ``upright.jpg`` instead needs a loose tolerance (up to 2e-2): the two files
    are separate JPEG encodings of differently laid out pixels (DCT blocks and chroma
    subsampling fall differently after a rotation), so their decoded pixels differ by a few
    levels. Here both sides decode the same bytes with the same PIL and resize with the same
    torchvision kernel, so the default float32 tolerance (rtol 1.3e-6, atol 1e-5) holds.
    """
    model = reslab.load_checkpoint(ckpt).eval()
    got = predict_files(model, [images / "exif.jpg"], topk=10)[0]
    got_probs = torch.zeros(10)
    for c, _, p in got.classes:
        got_probs[c] = p
    with Image.open(images / "exif.jpg") as img:
        assert img.getexif()[0x0112] == 6  # "rotate 90° clockwise to display"
        stored = np.array(img.convert("RGB"))
    shown = np.rot90(stored, k=-1)  # numpy's k=-1 turns clockwise
    upright = np.array(Image.open(images / "upright.jpg").convert("RGB"))
    assert shown.shape == upright.shape == (40, 56, 3)
    assert np.abs(shown.astype(int) - upright).mean() < 3  # the same picture, up to JPEG noise
    torch.testing.assert_close(got_probs, _reference_probs(model, shown))
    unrotated = _reference_probs(model, stored)
    assert (got_probs - unrotated).abs().max() > 1e-3  # ignoring the tag would be caught


def test_every_image_mode_is_classified(ckpt, images):
    model = reslab.load_checkpoint(ckpt)
    files = ["gray.png", "gray_as_rgb.png", "rgba.png", "cmyk.jpg", "sixteen.png", "exif.jpg",
             "upright.jpg"]  # fmt: skip
    res = {Path(r.file).name: r for r in predict_files(model, [images / f for f in files])}
    assert all(r.ok for r in res.values())

    def probs(name):
        return torch.tensor([p for _, _, p in res[name].classes])

    # Grey equals the same grey stored as RGB; 16-bit grey equals its 8-bit twin.
    torch.testing.assert_close(probs("gray.png"), probs("gray_as_rgb.png"))
    torch.testing.assert_close(probs("sixteen.png"), probs("gray.png"))


def test_cli_bad_files_get_one_line_and_the_rest_still_print(ckpt, images, capsys):
    files = [str(images / f) for f in ("rgb.png", "notes.txt", "truncated.png", "gray.png")]
    code = main(["predict", str(ckpt), *files, "--topk", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.count("%") == 4 and "rgb.png" in out and "gray.png" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "notes.txt" in lines[0] and "truncated.png" in lines[1]
    assert "Traceback" not in err


def test_a_decompression_bomb_is_one_unreadable_image(ckpt, images, tmp_path, capsys):
    """A tiny PNG that would decode to 900 million pixels is refused like any bad file."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (30000, 30000)).save(bomb)
    assert bomb.stat().st_size < 1_000_000
    files = [str(images / "rgb.png"), str(bomb), str(images / "gray.png")]
    code = main(["predict", str(ckpt), *files, "--topk", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and out.count("%") == 2 and "rgb.png" in out and "gray.png" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bomb.png" in lines[0] and "too large" in lines[0]


def test_cli_json(ckpt, images, capsys):
    assert main(["predict", str(ckpt), str(images / "rgb.png"), "--json", "--topk", "20"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    preds = entry["predictions"]
    assert len(preds) == 10  # topk is clamped to the number of classes
    assert {p["class"] for p in preds} == set(NAMES)
    assert sum(p["probability"] for p in preds) == pytest.approx(1.0, abs=1e-4)


def test_cli_unknown_model_or_missing_checkpoint(capsys, images):
    assert main(["predict", "nosuchmodel@x", str(images / "rgb.png")]) == 2
    assert main(["predict", "missing/model.safetensors", str(images / "rgb.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("reslab predict: error:") for line in err)


def test_class_names_fallbacks():
    model = reslab.create_model("resnet18", num_classes=1000)
    assert class_names_of(model)[285] == "Egyptian cat"
    assert class_names_of(reslab.create_model("resnet20", num_classes=3)) == ["0", "1", "2"]


def test_restrict_class_index_by_wnid_name_and_list():
    imagenet = class_names_of(reslab.create_model("resnet18", num_classes=1000))
    wnids = ["n01440764", "n02102040", "n03888257"]
    assert restrict_class_index(imagenet, wnids) == [0, 217, 701]
    assert restrict_class_index(imagenet, ["tench", "English springer"]) == [0, 217]
    assert restrict_class_index(imagenet, ["a", "b"], "5, goldfish") == [5, 1]
    with pytest.raises(ValueError, match="matches none"):
        restrict_class_index(imagenet, ["n99999999"])
    with pytest.raises(ValueError, match="lists 1 classes"):
        restrict_class_index(imagenet, ["a", "b"], "3")


def test_eval_restrict_classes(tmp_path, capsys):
    # A 1000-class model whose logits favour each folder's ImageNet class, through `reslab eval`.
    wnids = {"n01440764": 0, "n02102040": 217, "n03888257": 701}
    model = reslab.create_model("resnet18", num_classes=1000, normalize=False)
    torch.nn.init.zeros_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.copy_(torch.randn(1000))
        model.fc.bias[701] = 50.0  # always the top of all 1000 classes …
        model.fc.bias[0] = 10.0  # … and of the three Imagenette-like classes: "tench"
    model.set_data_config(
        class_names=tuple(class_names_of(model)), input_size=(3, 32, 32), crop_pct=1.0
    )
    ckpt = reslab.save_checkpoint(tmp_path / "m.safetensors", model)
    root = tmp_path / "data"
    for split in ("train", "val"):
        for wnid in wnids:
            (root / split / wnid).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (80, 80), (i * 50, 9, 9)).save(root / split / wnid / f"{i}.png")
    code = main(["eval", str(ckpt), "--data", str(root), "--restrict-classes", "--json",
                 "--workers", "0", "--out", str(tmp_path / "c.png")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    # Restricted to [0, 217, 701], class 701 ("parachute", the third folder) always wins.
    assert result["count"] == 6 and result["accuracy"] == pytest.approx(1 / 3)
