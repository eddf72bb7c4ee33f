"""Loading weights: mismatches are reported in one error; checkpoints rebuild the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import reslab
from reslab.weights import StateDictMismatch, WeightsError, read_state_dict


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


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read as torch weights"):
        read_state_dict(path)


def test_truncated_safetensors_says_so(tmp_path):
    model = reslab.create_model("resnet20")
    path = reslab.save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        reslab.load_checkpoint(bad)


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
