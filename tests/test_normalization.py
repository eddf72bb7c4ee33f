"""Normalisation belongs in the model: 0–1 pixels in, the same logits as torchvision's recipe."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.transforms import v2

from conftest import randomize_bn
from reslab import create_model, list_models, load_checkpoint, load_weights, save_checkpoint
from reslab.models import InputNormalize
from reslab.weights import resolve_model

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# torchvision's ImageNet recipe, typed here rather than imported from reslab.
TV_NORMALIZE = v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def _twins():
    """A torchvision ResNet-18 with non-trivial BN and reslab's default model with its weights."""
    tv = randomize_bn(torchvision.models.resnet18()).eval()
    ours = create_model("resnet18")  # normalize=True is the default
    load_weights(ours, tv.state_dict())
    return tv, ours.eval()


def test_normalized_model_on_01_pixels_equals_torchvision_on_normalized_pixels():
    tv, ours = _twins()
    x = torch.rand(3, 3, 96, 96)  # images scaled to 0-1, as load_image(...) / 255 gives
    with torch.no_grad():
        expected = tv(TV_NORMALIZE(x))
        got = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_forgetting_to_normalise_cannot_happen_by_default():
    # The seed's "green mamba": a model fed raw 0-1 pixels when it expects normalised ones
    # answers confidently and wrongly. That is what torchvision does with raw pixels; reslab's
    # default model gets the normalised answer from the same raw pixels.
    tv, ours = _twins()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        right = tv(TV_NORMALIZE(x))
        forgot = tv(x)
        default = ours(x)
    assert (forgot - right).abs().max() > 1e-2  # the failure mode is real for these weights
    torch.testing.assert_close(default, right, rtol=1e-4, atol=1e-4)


def test_opting_out_means_the_caller_normalises():
    tv, ours = _twins()
    raw = create_model("resnet18", normalize=False).eval()
    raw.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(raw(TV_NORMALIZE(x)), tv(TV_NORMALIZE(x)), rtol=1e-4, atol=1e-4)
    assert raw.default_cfg["normalize"] is None


def test_every_registered_model_normalises_by_default():
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        assert isinstance(model.normalize, InputNormalize), name
        assert model.default_cfg["normalize"] is not None, name
    # The command-line path (`reslab predict MODEL ...`) builds models the same way.
    with torch.device("meta"):
        assert isinstance(resolve_model("resnet50").normalize, InputNormalize)


def test_grey_models_and_cifar_models_use_their_own_statistics():
    # Statistics travel with the model: CIFAR nets carry CIFAR's, 1-channel models the mean of
    # the 3-channel ones (0.485+0.456+0.406)/3 and (0.229+0.224+0.225)/3.
    cifar = create_model("resnet20")
    assert cifar.normalize.config()["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    grey = create_model("resnet18", in_chans=1)
    assert grey.normalize.config()["mean"] == pytest.approx([0.449])
    assert grey.normalize.config()["std"] == pytest.approx([0.226])
    x = torch.rand(2, 1, 40, 40)
    expected = (x - 0.449) / 0.226
    torch.testing.assert_close(grey.normalize(x), expected)


def test_checkpoints_keep_the_normalisation(tmp_path):
    _, ours = _twins()
    path = save_checkpoint(tmp_path / "m.safetensors", ours)
    loaded = load_checkpoint(path).eval()
    assert isinstance(loaded.normalize, InputNormalize)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ours(x))
