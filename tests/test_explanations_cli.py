"""``reslab analyze explanations`` on tiny models and fake Fashion-MNIST: its numbers
against the model run here on the idx files read by hand, its options and one-line errors,
and the section it adds to a run's report, opened in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from browser import Browser, require_browser
from conftest import read_idx_gz
from reslab import create_model, load_checkpoint, save_checkpoint
from reslab.analysis.report.explanations_page import EXPLANATIONS_SECTION
from reslab.cli import main
from reslab.weights import resolve_spec_path
from test_data_synthetic import write_fake_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=30)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A real (tiny) training run folder."""
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESLAB_OFFLINE", "1")
        mp.delenv("RESLAB_DATA", raising=False)
        args = ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--model",
                "resnet20", "--width", "0.25", "--epochs", "1", "--bs", "16", "--lr", "0.1",
                "--no-progress", "--no-report", "--threads", "1", "--out", str(out)]  # fmt: skip
        assert main(args) == 0
    return out


@pytest.fixture
def checkpoint(tmp_path):
    model = create_model("resnet20", num_classes=10, in_chans=1, width=0.25)
    return save_checkpoint(tmp_path / "tiny.safetensors", model)


def test_outputs_and_numbers_of_a_run(run, data, capsys):
    model_file = resolve_spec_path(str(run))
    weights = model_file.read_bytes()
    args = ["analyze", "explanations", str(run), "--data", "fashion-mnist", "--data-dir",
            str(data), "--images", "5", "--steps", "4", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert model_file.read_bytes() == weights  # the model is left as it was
    for name in ("explanations.png", "explanations-cascade.png"):
        assert (run / name).read_bytes().startswith(PNG)  # beside the run's model
    report = json.loads((run / "explanations.json").read_text())
    faith, rand = report["faithfulness"], report["randomization"]
    indices = report["image_indices"]
    assert len(indices) == 5 == faith["images"] and indices == sorted(set(indices))
    assert faith["methods"] == ["gradcam", "gradcam++", "saliency", "random", "random-coarse"]
    assert faith["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0]  # 784 pixels in 4 steps
    # The first deletion point is the model's top-1 probability on the images, computed
    # here from the idx file read by hand.
    pixels = read_idx_gz(data / "t10k-images-idx3-ubyte.gz")[indices].astype(np.float32) / 255
    with torch.no_grad():
        probs = load_checkpoint(model_file).eval()(torch.from_numpy(pixels)[:, None]).softmax(1)
    assert faith["target"] == probs.argmax(1).tolist()
    for m in faith["methods"]:
        first = faith["deletion"][m]["curve_mean"][0]
        assert first == pytest.approx(float(probs.max(1).values.mean()), abs=1e-5)
        assert faith["insertion"][m]["curve_mean"][-1] == pytest.approx(first, abs=1e-5)
        assert len(faith["deletion"][m]["auc_per_image"]) == 5
    assert [s["randomized"] for s in rand["steps"]] == [
        "head",
        "layer3",
        "layer2",
        "layer1",
        "stem",
    ]
    assert rand["flagged"] == [
        m for m in rand["methods"] if rand["steps"][-1]["correlation"][m]["mean"] >= 0.5
    ]
    for words in ("deletion AUC", "gradcam++", "random-coarse", "+ layer3", "flagged", "wrote"):
        assert words in out


@pytest.fixture(scope="module")
def measured_run(run, data):
    args = ["analyze", "explanations", str(run), "--data", "fashion-mnist", "--data-dir",
            str(data), "--images", "3", "--steps", "4", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert main(["report", str(run), "--limit", "10", "--top-losses", "2"]) == 0
    return run


def test_the_run_report_shows_the_measures(measured_run):
    html = (measured_run / "report.html").read_text()
    faith = json.loads((measured_run / "explanations.json").read_text())["faithfulness"]
    section = re.search(rf'<section id="{EXPLANATIONS_SECTION}">(.*?)</section>', html, re.S)
    assert section is not None and html.index(section.group(0)) < html.index('id="environment"')
    body = section.group(1)
    assert body.count("<img") == 2 and "Petsiuk" in body and "Adebayo" in body
    d = faith["deletion"]["gradcam"]["auc"]
    assert f"{d['mean']:.3f} ± {d['std']:.3f}" in body and "+ stem" in body
    assert f'href="#{EXPLANATIONS_SECTION}"' in html  # in the table of contents


def test_the_run_report_opens_in_a_browser(measured_run):
    with Browser(binary=require_browser(), width=1100, height=800) as browser:
        shown = browser.open(measured_run / "report.html")
    assert shown.problems() == []  # images loaded, no console errors or requests, not blank
    assert len(shown.images) >= 5 and all(img["naturalWidth"] > 0 for img in shown.images)


def test_a_broken_explanations_file_is_a_note(measured_run, tmp_path):
    run = measured_run
    for path in run.iterdir():
        if path.is_file() and path.name != "explanations.json":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "explanations.json").write_text('{"faithfulness": {"methods": 3}}')
    # a figure of an earlier run: not shown
    assert (tmp_path / "explanations-cascade.png").is_file()
    assert main(["report", str(tmp_path), "--limit", "5", "--top-losses", "0"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "explanations.json could not be shown" in html
    # Without a randomisation in the JSON, a cascade figure left in the folder is not shown.
    faith = json.loads((run / "explanations.json").read_text())
    (tmp_path / "explanations.json").write_text(json.dumps({**faith, "randomization": None}))
    assert main(["report", str(tmp_path), "--limit", "5", "--top-losses", "0"]) == 0
    html = (tmp_path / "report.html").read_text()
    section = re.search(rf'<section id="{EXPLANATIONS_SECTION}">(.*?)</section>', html, re.S)
    assert section is not None and section.group(1).count("<img") == 1


def test_json_and_options(checkpoint, data, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["analyze", "explanations", str(checkpoint), "--data", "fashion-mnist", "--data-dir",
            str(data), "--images", "3", "--steps", "2", "--methods", "gradcam,gradcam",
            "--baseline", "mean", "--no-randomization", "--seed", "3", "--json",
            "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # stdout is the JSON alone
    assert printed == json.loads((out / "explanations.json").read_text())
    assert "randomization" not in printed and not (out / "explanations-cascade.png").exists()
    faith = printed["faithfulness"]
    assert faith["methods"] == ["gradcam", "random", "random-coarse"]
    assert faith["baseline"] == "mean"
    assert faith["blur_sigma_fraction"] is None and faith["fractions"] == [0.0, 0.5, 1.0]
    g = torch.Generator().manual_seed(3)  # --seed picks the images
    assert printed["image_indices"] == torch.randperm(30, generator=g)[:3].sort().values.tolist()
    with Image.open(out / "explanations.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]
    assert "wrote" in captured.err


def write_rgb_folder(root):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (200, 10, 10)).save(root / split / name / "0.png")
    return root


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "gradcam,gradcm"], "unknown method 'gradcm'; did you mean gradcam"),
        (["--steps", "1000"], "steps must be between 1 and the 784 pixels"),
        (["--layer", "layer9"], "unknown layer 'layer9'"),
        (["--data", "RGB"], "the model takes 1-channel images"),
        (["--out", "FILE", "--data", "MISSING"], "is a file, not a folder"),
        (["--out", "TAKEN"], "is a folder; give a file name"),
    ],
)
def test_bad_input_gets_one_line(checkpoint, data, tmp_path, capsys, extra, message):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "TAKEN" / "explanations.json").mkdir(parents=True)
    places = {"RGB": str(write_rgb_folder(tmp_path / "rgb")), "FILE": str(tmp_path / "FILE"),
              "MISSING": str(tmp_path / "missing"), "TAKEN": str(tmp_path / "TAKEN")}  # fmt: skip
    extra = [places.get(e, e) for e in extra]
    args = ["analyze", "explanations", str(checkpoint), "--data", "fashion-mnist",
            "--data-dir", str(data), "--images", "2", "--no-progress", "--out",
            str(tmp_path / "o"), *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reslab analyze: error:") and message in err[0]
    assert not (tmp_path / "o").exists()
