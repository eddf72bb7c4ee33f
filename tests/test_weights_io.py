"""Loading weights: mismatches are reported in one error; checkpoints rebuild the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import reslab
from conftest import randomize_bn
from reslab.weights import StateDictMismatch, WeightsError, read_state_dict, resolve_model


def test_mismatch_lists_missing_unexpected_and_wrong_shape(tmp_path):
    state = torchvision.models.resnet18(num_classes=10).state_dict()
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = reslab.create_model("resnet18")
    with pytest.raises(StateDictMismatch) as err:
        reslab.load_weights(model, str(path))
    msg = str(err.value)
    assert "missing (1): layer1.0.conv1.weight" in msg
    assert "unexpected (1): extra.weight" in msg
    assert "fc.weight (10, 512) != (1000, 512)" in msg


def test_head_is_kept_when_fine_tuning_to_other_classes(tmp_path):
    tv = torchvision.models.resnet18()
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    model = reslab.create_model("resnet18", num_classes=4, pretrained=None)
    reslab.load_weights(model, str(path), drop_head_if_mismatched=True)
    torch.testing.assert_close(model.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert model.fc.weight.shape == (4, 512)


def test_files_from_before_pytorch_0_4_1_load_like_torch_loads_them(tmp_path):
    # No BatchNorm num_batches_tracked (torchvision's first ResNet-50 file): torch fills the
    # counters in; reslab must load the file too, with the same outputs.
    tv = randomize_bn(torchvision.models.resnet18(num_classes=10)).eval()
    state = {k: v for k, v in tv.state_dict().items() if "num_batches_tracked" not in k}
    torch.save(state, tmp_path / "old.pth")
    twin = torchvision.models.resnet18(num_classes=10).eval()
    twin.load_state_dict(state)  # torch's own behaviour: accepted
    model = reslab.create_model("resnet18", num_classes=10, normalize=False).eval()
    reslab.load_weights(model, str(tmp_path / "old.pth"))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=1e-5, atol=1e-5)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read as torch weights") as info:
        read_state_dict(path)
    # The user is told why, not advised to switch the protection off.
    assert "weights_only" not in str(info.value) and "pickled Python objects" in str(info.value)


def test_truncated_safetensors_says_so(tmp_path):
    model = reslab.create_model("resnet20")
    path = reslab.save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="bad.safetensors: corrupt or truncated"):
        reslab.load_checkpoint(bad)
    # Through the resolver every command uses: the cause, not "not a reslab checkpoint".
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        resolve_model(str(bad))
    bad.write_bytes(data[:100])  # inside the header
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        resolve_model(str(bad))


def _header_only(path, header: dict) -> None:
    """A safetensors file with a reslab header and no tensors (212 bytes or so)."""
    from safetensors.torch import save

    path.write_bytes(save({}, metadata={"reslab": json.dumps(header)}))


@pytest.mark.parametrize(
    "header, message",
    [
        ({"format": 2}, "no model config"),
        ({"format": 1}, "invalid checkpoint config"),
        ({"format": 2, "model": {"arch": {"depth": 3}}}, "unknown architecture option"),
        ({"format": 2, "model": {"arch": {"block": "os.system"}}}, "block must be one of"),
        ({"format": 2, "model": {"arch": {"num_classes": -1}}}, "num_classes must be"),
        ({"format": 2, "model": {"arch": {"layers": [2, "x"]}}}, "layers must be"),
        ({"format": 7, "model": {}}, "unknown checkpoint format"),
        (
            {
                "format": 1,
                "build": {
                    "name": "resnet18",
                    "num_classes": 10,
                    "in_chans": 3,
                    "overrides": {"depth": 3},
                },
            },
            "unknown option",
        ),  # fmt: skip
    ],
)
def test_bad_checkpoint_headers_name_the_file_and_the_cause(tmp_path, header, message):
    path = tmp_path / "m.safetensors"
    _header_only(path, header)
    with pytest.raises(WeightsError, match=message) as info:
        reslab.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_an_absurd_header_is_refused_before_any_memory_is_used(tmp_path):
    """Two million classes of ResNet-18 would be a 4 GB classifier: the header is checked
    against the file's (absent) tensors on the meta device first, in a process that could
    not even allocate 1.5 GB."""
    path = tmp_path / "huge.safetensors"
    arch = {"block": "basic", "layers": [2, 2, 2, 2], "num_classes": 2_000_000}
    _header_only(path, {"format": 2, "model": {"arch": arch, "data": {}}})
    assert path.stat().st_size < 600
    script = (
        "import resource, sys\n"
        "from reslab.cli import main\n"
        "lines = open('/proc/self/status').read().splitlines()\n"
        "size = next(int(l.split()[1]) for l in lines if l.startswith('VmSize'))\n"
        "limit = size * 1024 + (1536 << 20)  # what is mapped now, plus 1.5 GB\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "sys.exit(main(['predict', sys.argv[1], sys.argv[2]]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "do not fit the model" in lines[0] and "fc.weight" in lines[0]


def test_checkpoint_rebuilds_the_model_from_the_file_alone(tmp_path):
    model = reslab.create_model(
        "resnet20", num_classes=3, in_chans=1, width=0.5, normalize={"mean": [0.3], "std": [0.2]}
    ).eval()
    model.reset_classifier(2)
    path = reslab.save_checkpoint(tmp_path / "ck.safetensors", model, class_names=["a", "b"])
    loaded = reslab.load_checkpoint(path).eval()
    x = torch.rand(2, 1, 32, 32)
    expected = model.fc(model.forward_head(model.forward_features(x), pre_logits=True))
    torch.testing.assert_close(loaded(x), expected.detach())
    assert loaded.checkpoint_state["class_names"] == ["a", "b"]
    assert loaded.normalize.config()["mean"] == pytest.approx([0.3])
    # no partial file is left behind by the atomic write
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]


def test_atomic_write_gives_the_file_the_usual_mode(tmp_path):
    # mkstemp's private 0600 must not leak into checkpoints and exports meant to be shared.
    import os
    import stat

    from reslab.files import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "w.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
        reslab.save_checkpoint(tmp_path / "m.safetensors", reslab.create_model("resnet20"))
    finally:
        os.umask(umask)
    for name in ("w.bin", "m.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "w.bin"]


def test_atomic_write_never_touches_the_process_umask(tmp_path, monkeypatch):
    """Setting the umask to read it changes it for every thread for a moment; the writer reads
    it from /proc instead. A failed write leaves the old file and no temporary file."""
    import os

    from reslab.files import atomic_write, atomic_write_text

    atomic_write_text(tmp_path / "keep.txt", "old")

    def no_umask(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_text(tmp_path / "new.txt", "x")

    def fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "keep.txt", fail)
    assert (tmp_path / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "new.txt"]
