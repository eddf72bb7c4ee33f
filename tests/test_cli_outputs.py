"""The CLI on inputs it should refuse in one line: an --out that is the input checkpoint, an
explain map named like an input image, a device that is not one, run files that are not what
reslab writes (hand-edited or damaged JSON)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return reslab.save_checkpoint(path, reslab.create_model("resnet20", num_classes=10))


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{ckpt}", "--format", "torchscript", "--out", "{ckpt}"],
        ["eval", "{ckpt}", "--data", "fashion-mnist", "--out", "{ckpt}"],
        ["report", "{ckpt}", "--data", "fashion-mnist", "--out", "{ckpt}"],
        ["report", "{run}", "--out", "{ckpt}"],
    ],
)
def test_an_output_that_is_the_input_is_refused(ckpt, command, capsys):
    before = _digest(ckpt)
    argv = [a.format(ckpt=ckpt, run=ckpt.parent) for a in command]
    assert main(argv) == 2
    _one_line_error(capsys, "is an input of this command")
    assert _digest(ckpt) == before


def test_explain_never_writes_over_an_input_image(ckpt, tmp_path, capsys):
    # a.png's map would be a-gradcam.png, which is the second input here.
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for name in ("a.png", "a-gradcam.png"):
        Image.fromarray(pixels).save(tmp_path / name)
    before = _digest(tmp_path / "a-gradcam.png")
    images = [str(tmp_path / "a.png"), str(tmp_path / "a-gradcam.png")]
    assert main(["explain", str(ckpt), *images, "--out", str(tmp_path)]) == 0
    assert _digest(tmp_path / "a-gradcam.png") == before
    assert (tmp_path / "a-2-gradcam.png").is_file()
    assert (tmp_path / "a-gradcam-gradcam.png").is_file()


DEVICE_COMMANDS = [["train", "--data", "fashion-mnist"], ["report", "resnet20", "--data", "x"]]


@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_a_device_that_is_not_one_is_a_usage_error(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--out", str(tmp_path / "x"), "--device", "banana"])
    assert exc.value.code == 2
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_cuda_without_a_gpu_is_one_line(command, tmp_path, capsys):
    assert main([*command, "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    _one_line_error(capsys, "no CUDA GPU is visible")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "file, text, command, message",
    [
        ("history.json", '{"history": []}', ["plot", "history"], "no epochs recorded"),
        ("history.json", "{}", ["plot", "history"], "'history' must be a list of epochs"),
        ("history.json", '{"history": 5}', ["plot", "history"], "must be a list of epochs"),
        ("history.json", '{"history": [5]}', ["plot", "history"], "history[0] is not an epoch"),
        ("history.json", "[1, 2]", ["plot", "history"], "expected a JSON object"),
        ("lr_find.json", '{"x": 1}', ["plot", "lr"], "no 'lrs'"),
        ("lr_find.json", '{"lrs": [1], "losses": "x"}', ["plot", "lr"], "'losses' must be"),
    ],
)
def test_damaged_run_files_are_one_line(file, text, command, message, tmp_path, capsys):
    (tmp_path / file).write_text(text)
    assert main([*command, str(tmp_path), "--out", str(tmp_path / "plot.png")]) == 2
    _one_line_error(capsys, message, file)  # the message names the damaged file


def test_a_report_survives_a_damaged_history(ckpt, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(ckpt.read_bytes())
    (run / "history.json").write_text('{"history": 5, "batch_lr": "x"}')
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().lower().startswith("<!doctype html>")


def test_convert_labels_not_keyed_0_to_n_are_one_line(tmp_path, capsys):
    (tmp_path / "labels.json").write_text('{"1": "a"}')
    argv = ["weights", "convert", str(tmp_path), str(tmp_path / "o.safetensors")]
    assert main([*argv, "--labels", str(tmp_path / "labels.json")]) == 2
    _one_line_error(capsys, "keys must be 0..0")
