"""BN folding and `reslab export`, checked against independent references: the unfolded
eval-mode model's logits, `torch.jit.load` of the written file, and onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import is_batchnorm, randomize_bn
from reslab import create_model, load_checkpoint, save_checkpoint
from reslab.cli import main
from reslab.inference.export import export_onnx, export_torchscript, fold_batchnorm

# torch 2.14 deprecates torch.jit; these tests still load TorchScript files with it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval model whose BNs have non-trivial running stats and affine params, so folding
    changes every conv (fresh BNs are the identity up to eps)."""
    return randomize_bn(model, seed).eval()


def images(batch: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- folding
@pytest.mark.parametrize(
    "name, size, n_bn",
    [
        ("resnet18", 64, 20),  # stem + 2 per block x 8 + 3 conv shortcuts
        ("resnet20", 32, 19),  # CIFAR net: option-A shortcuts have no BN
        ("resnet26d", 64, 31),  # deep stem (3) + bottlenecks (3 x 8) + avg-pool shortcuts (4)
        ("xresnet18", 64, 22),  # deep stem + avg-pool shortcuts, basic blocks
    ],
)
def test_fold_batchnorm_keeps_logits_and_removes_every_bn(name, size, n_bn):
    model = randomised(create_model(name, num_classes=10))
    assert sum(map(is_batchnorm, model.modules())) == n_bn
    x = images(2, size)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        out = folded(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert not any(map(is_batchnorm, folded.modules()))
    assert folded.folded_batchnorms == n_bn
    assert not folded.training
    # The input model is untouched: still its BNs, and the same outputs.
    assert sum(map(is_batchnorm, model.modules())) == n_bn
    with torch.no_grad():
        assert torch.equal(model(x), ref)


def test_fold_batchnorm_is_exact_in_float64():
    # In float64 the only error left is rounding, so a wrong formula cannot hide in 1e-5.
    model = randomised(create_model("xresnet18", num_classes=10)).double()
    x = images(2, 64).double()
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=0, atol=1e-10)


def test_fold_batchnorm_scratch_layers_and_their_torchscript_export(tmp_path):
    model = randomised(create_model("resnet20", num_classes=10, layers="scratch"))
    x = images(2, 32)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)
    assert not any(map(is_batchnorm, folded.modules()))
    # Scratch layers cannot be traced; export swaps in the torch.nn twin with the same weights.
    path = export_torchscript(folded, tmp_path / "scratch.torchscript", x)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), ref, rtol=1e-5, atol=1e-5)


def test_the_torch_twin_of_scratch_layers_keeps_a_non_default_batchnorm_eps():
    # eps is a setting, not state: a twin built from the config alone would use 1e-5.
    from reslab.inference.export import to_torch_layers

    model = randomised(create_model("resnet20", num_classes=10, layers="scratch")).eval()
    for module in filter(is_batchnorm, model.modules()):
        module.eps = 1e-2
    x = images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(to_torch_layers(model)(x), model(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- TorchScript
def test_torchscript_round_trip_any_batch_and_metadata(tmp_path):
    model = randomised(create_model("resnet18", num_classes=5))
    model.set_data_config(class_names=("ant", "bee", "cat", "dog", "eel"))
    path = export_torchscript(model, tmp_path / "r18.torchscript", images(2, 64))
    extra = {"reslab.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        for batch in (2, 3, 1):  # traced on 2: the batch size is not baked in
            x = images(batch, 64, seed=batch)
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    meta = json.loads(extra["reslab.json"])
    assert meta["class_names"] == ["ant", "bee", "cat", "dog", "eel"]
    assert meta["input_size"] == [3, 224, 224] and meta["normalize_inside"] is True
    assert meta["normalize"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert model.training is False and not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------------------- ONNX
@pytest.fixture(scope="module")
def ort():
    # Both are in the `test` extra: a missing one is a broken install, not a reason to skip.
    import onnxruntime
    import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)

    return onnxruntime


def _session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_matches_pytorch_with_dynamic_batch(ort, tmp_path):
    model = randomised(create_model("resnet20"))
    model.train()  # export must use eval mode without changing the caller's model
    path = export_onnx(fold_batchnorm(model), tmp_path / "r20.onnx", images(2, 32))
    assert model.training
    model.eval()
    session = _session(ort, path)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("images", "logits") and inp.shape[1:] == [3, 32, 32]
    with torch.no_grad():
        for batch in (2, 5, 1):
            x = images(batch, 32, seed=batch)
            got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
            torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
    meta = json.loads(session.get_modelmeta().custom_metadata_map["reslab"])
    assert meta["folded_batchnorms"] == 19 and meta["input_size"] == [3, 32, 32]
    assert meta["class_names"] == [str(i) for i in range(10)]


def test_onnx_fixed_batch_and_old_opset(ort, tmp_path):
    model = randomised(create_model("resnet20"))
    path = export_onnx(model, tmp_path / "fixed.onnx", images(3, 32), dynamic_batch=False)
    session = _session(ort, path)
    assert session.get_inputs()[0].shape == [3, 3, 32, 32]
    x = images(3, 32)
    with torch.no_grad():
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="opset 17"):
        export_onnx(model, tmp_path / "old.onnx", x, opset=17)


# ---------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reslab", *args], capture_output=True, text=True)


@pytest.fixture
def ckpt(tmp_path):
    model = randomised(create_model("resnet20", num_classes=3))
    model.set_data_config(class_names=("cat", "dog", "fox"))
    return save_checkpoint(tmp_path / "pets.safetensors", model)


def test_cli_export_torchscript_from_checkpoint(ckpt, tmp_path):
    proc = run_cli("export", str(ckpt), "--format", "torchscript", "--fold-bn")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "pets.torchscript"  # default: next to the checkpoint
    assert f"wrote {out}" in proc.stdout and "19 BatchNorms folded" in proc.stdout
    assert "max |exported - pytorch|" in proc.stdout
    extra = {"reslab.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    model = load_checkpoint(ckpt).eval()
    x = images(4, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    assert json.loads(extra["reslab.json"])["class_names"] == ["cat", "dog", "fox"]


def test_cli_export_onnx_fixed_batch(ort, ckpt, tmp_path, capsys):
    out = tmp_path / "sub" / "pets.onnx"
    assert main(["export", str(ckpt), "--format", "ONNX", "--out", str(out), "--batch", "2"]) == 0
    assert "batch 2" in capsys.readouterr().out
    session = _session(ort, out)
    assert session.get_inputs()[0].shape == [2, 3, 32, 32]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["reslab"])
    assert meta["class_names"] == ["cat", "dog", "fox"] and meta["folded_batchnorms"] == 0


def test_cli_unknown_format_is_one_line_exit_2(ckpt):
    proc = run_cli("export", str(ckpt), "--format", "tflite")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "unknown format 'tflite'" in proc.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing/model.safetensors", "--format", "onnx"], "no such file"),
        (["resnet_nope", "--format", "torchscript"], "unknown model"),
        (["resnet20", "--format", "onnx", "--opset", "13"], "opset 13"),
        (["resnet20", "--format", "onnx", "--opset", "99"], "opset 99 is newer"),
        (["resnet20", "--format", "onnx", "--out", "."], "is a folder; give a file name"),
        (["resnet20", "--format", "onnx", "--out", "f/m.onnx"], "is a file, not a folder"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("a file where a folder is expected")
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # nothing half-written
