"""``explain`` and ``reslab explain``: the top classes are the model's, each map is the
Grad-CAM of its class (against a hook-based reference written here), bad files cost a line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import reslab
from conftest import randomize_bn
from reslab.analysis import class_index, explain, plot_explanation
from reslab.cli import main
from reslab.inference import load_for_model

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen", "ibis", "jay"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = randomize_bn(reslab.create_model("resnet20", num_classes=10)).eval()
    m.set_data_config(class_names=tuple(NAMES), crop_pct=1.0)
    return m


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return reslab.save_checkpoint(tmp_path_factory.mktemp("m") / "m.safetensors", model)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / name)
    (d / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "sub" / "a.png")
    (d / "notes.png").write_text("not an image")
    return d


def reference_gradcam(model, image, cls: int, layer) -> torch.Tensor:
    """Grad-CAM with a forward hook, straight from the paper's definition."""
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.update(a=o))
    x = image[None].clone().requires_grad_(True)
    try:
        score = model(x)[0, cls]
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score, kept["a"])
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * kept["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


def test_explain_gives_the_top_classes_and_their_maps(model):
    image = torch.rand(3, 32, 32)
    got = explain(model, image, NAMES, topk=3)
    with torch.no_grad():
        probs = model(image[None]).softmax(1)[0]
    top = probs.argsort(descending=True)[:3].tolist()
    assert [c[0] for c in got.classes] == top
    assert [c[1] for c in got.classes] == [NAMES[i] for i in top]
    assert [c[2] for c in got.classes] == pytest.approx(probs[top].tolist(), abs=1e-6)
    assert got.maps.shape == (3, 32, 32) and got.layer == "layer3"
    for cam, cls in zip(got.maps, top):
        torch.testing.assert_close(
            cam, reference_gradcam(model, image, cls, model.layer3), atol=1e-5, rtol=0
        )
    # The maps differ between classes (a bug that reused the top-1 map would not).
    assert not torch.allclose(got.maps[0], got.maps[1])


def test_explain_one_named_class_and_other_methods(model):
    image = torch.rand(3, 32, 32)
    got = explain(model, image, NAMES, target="FOX")
    assert [c[:2] for c in got.classes] == [(5, "fox")]
    torch.testing.assert_close(
        got.maps[0], reference_gradcam(model, image, 5, model.layer3), atol=1e-5, rtol=0
    )
    assert explain(model, image, NAMES, target=5).classes[0][1] == "fox"
    got = explain(model, image, NAMES, topk=2, method="saliency")
    assert got.layer is None and got.maps.shape == (2, 32, 32) and got.source == "saliency"
    got = explain(model, image, NAMES, topk=1, layer="layer2")
    assert got.source == "gradcam at layer2"
    torch.testing.assert_close(
        got.maps[0],
        reference_gradcam(model, image, got.classes[0][0], model.layer2),
        atol=1e-5,
        rtol=0,
    )


def test_class_index_errors():
    assert class_index("cat", NAMES) == 2 and class_index("Cat", NAMES) == 2
    assert class_index("9", NAMES) == 9
    with pytest.raises(ValueError, match="did you mean 'cat'"):
        class_index("cta", NAMES)
    with pytest.raises(ValueError, match="out of range"):
        class_index(10, NAMES)


def test_plot_explanation_writes_one_panel_per_class(model, tmp_path):
    got = explain(model, torch.rand(3, 32, 32), NAMES, topk=3)
    path = plot_explanation(got, tmp_path / "x.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (round(2.8 * 4 * 110), round(3.2 * 110))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temporary file left


def test_cli_one_png_per_image_and_one_line_per_bad_file(ckpt, model, images, tmp_path, capsys):
    files = [images / "a.png", images / "notes.png", images / "b.png", images / "sub" / "a.png"]
    code = main(["explain", str(ckpt), *map(str, files), "--topk", "2", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b-gradcam.png", f"{images.name}-a-gradcam.png", "sub-a-gradcam.png",
    ]  # fmt: skip
    lines = err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("reslab explain: error:")
        and "notes.png" in lines[0]
    )
    assert "Traceback" not in err
    # The printed classes are the model's top 2 for the image as `predict` would load it.
    with torch.no_grad():
        probs = model(load_for_model(files[0], model)[None]).softmax(1)[0]
    first = out.splitlines()[0]
    for i in probs.argsort(descending=True)[:2].tolist():
        assert f"{NAMES[i]} {100 * float(probs[i]):.1f}%" in first
    with Image.open(tmp_path / f"{images.name}-a-gradcam.png") as img:
        assert img.size[0] == round(2.8 * 3 * 110)  # input + 2 classes


def test_cli_class_and_method_and_bad_options(ckpt, images, tmp_path, capsys):
    args = ["explain", str(ckpt), str(images / "a.png"), "--out", str(tmp_path)]
    assert main([*args, "--class", "dog", "--method", "gradcam++"]) == 0
    assert "dog" in capsys.readouterr().out and (tmp_path / "a-gradcampp.png").is_file()
    assert main([*args, "--class", "zebra"]) == 2
    assert main([*args, "--layer", "layer9"]) == 2
    assert main([*args, "--method", "saliency", "--layer", "layer3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("reslab explain: error:") for line in err)
    assert "zebra" in err[0] and "layer9" in err[1]
