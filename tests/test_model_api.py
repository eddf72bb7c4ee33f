"""The model's API: features, heads, normalisation, channels, CIFAR shortcuts, plain blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import torchvision

import reslab
from conftest import randomize_bn
from reslab.layers import TORCH_LAYERS, LayerSet
from reslab.models import DropPath, InputNormalize, ResNet, UnknownModelError
from reslab.models.normalize import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "xresnet34"])
def test_features_have_strides_4_8_16_32(name):
    model = reslab.create_model(name).eval()
    x = torch.rand(1, 3, 64, 64)
    maps = model.features(x)
    assert [64 // m.shape[-1] for m in maps] == [4, 8, 16, 32]
    assert maps[-1].shape[1] == model.num_features
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), maps[-1])


def test_cifar_features_and_small_input_stem():
    maps = reslab.create_model("resnet20").features(torch.rand(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    m = reslab.create_model("resnet18", small_input=True)
    assert [32 // f.shape[-1] for f in m.features(torch.rand(1, 3, 32, 32))] == [1, 2, 4, 8]


def test_head_backbone_split():
    model = reslab.create_model("resnet18", num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        emb = model.forward_head(model.forward_features(x), pre_logits=True)
        assert emb.shape == (2, model.num_features)
        torch.testing.assert_close(model.backbone(x), emb)
        torch.testing.assert_close(model(x), emb @ model.fc.weight.T + model.fc.bias)
    assert model.head is model.fc
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert id(model.fc.weight) not in backbone_ids
    assert len(backbone_ids) + 2 == len(list(model.parameters()))


def test_reset_classifier():
    model = reslab.create_model("resnet50")
    model.reset_classifier(3)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert model.default_cfg["num_classes"] == 3
    model.reset_classifier(0)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 2048)


def test_normalize_inside_equals_torchvision_on_normalised_pixels():
    tv = randomize_bn(torchvision.models.resnet18()).eval()
    ours = reslab.create_model("resnet18").eval()  # normalize=True is the default
    ours.load_state_dict(tv.state_dict())  # the statistics are not in the state dict
    x = torch.rand(2, 3, 64, 64)
    ref = torchvision.transforms.functional.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(ref), atol=1e-5, rtol=1e-5)
    assert not any("normalize" in k for k in ours.state_dict())


def test_normalize_expresses_keras_caffe_preprocessing():
    norm = InputNormalize(mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0), scale=255.0, bgr=True)
    x = torch.rand(2, 3, 4, 4)
    bgr = x[:, [2, 1, 0]] * 255.0
    expected = bgr - torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)


def test_one_channel_model_equals_three_channel_model_on_repeated_input(tmp_path):
    rgb = randomize_bn(reslab.create_model("resnet18", normalize=False)).eval()
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    gray = reslab.create_model("resnet18", in_chans=1, normalize=False, pretrained=str(path)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


def test_more_channels_repeat_and_rescale_conv1(tmp_path):
    rgb = reslab.create_model("resnet18d", normalize=False)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    five = reslab.create_model("resnet18d", in_chans=5, normalize=False, pretrained=str(path))
    w = rgb.conv1[0].weight
    expected = torch.cat([w, w[:, :2]], dim=1) * 3 / 5  # channels cycle R,G,B,R,G
    torch.testing.assert_close(five.conv1[0].weight, expected)


def test_wrong_channel_count_says_what_was_expected():
    model = reslab.create_model("resnet18", in_chans=1)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, H, W\)"):
        model(torch.rand(1, 3, 32, 32))


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownModelError, match="resnet50"):
        reslab.create_model("resnet5O")
    with pytest.raises(TypeError, match="unknown option"):
        reslab.create_model("resnet18", depth=3)


def test_option_a_shortcut_subsamples_and_zero_pads():
    model = reslab.create_model("resnet20")
    shortcut = model.layer2[0].downsample
    x = torch.randn(2, 16, 8, 8)
    expected = torch.cat([torch.zeros(2, 8, 4, 4), x[:, :, ::2, ::2], torch.zeros(2, 8, 4, 4)], 1)
    torch.testing.assert_close(shortcut(x), expected)
    assert not list(shortcut.parameters())


def test_option_b_projection_is_selectable():
    a = reslab.create_model("resnet20")
    b = reslab.create_model("resnet20", shortcut="conv")
    extra = sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters())
    # two projections: 16->32 and 32->64 1x1 convs, each with a BN (gamma, beta)
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def _block_by_hand(block, x):
    h = F.relu(
        F.batch_norm(
            F.conv2d(x, block.conv1.weight, padding=1),
            block.bn1.running_mean,
            block.bn1.running_var,
            block.bn1.weight,
            block.bn1.bias,
        )
    )
    return F.batch_norm(
        F.conv2d(h, block.conv2.weight, padding=1),
        block.bn2.running_mean,
        block.bn2.running_var,
        block.bn2.weight,
        block.bn2.bias,
    )


def test_plain_block_has_no_shortcut_and_residual_block_adds_one():
    plain = randomize_bn(reslab.create_model("plain20")).eval()
    res = randomize_bn(reslab.create_model("resnet20")).eval()
    res.layer1[0].load_state_dict(plain.layer1[0].state_dict())
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        branch = _block_by_hand(plain.layer1[0], x)
        torch.testing.assert_close(plain.layer1[0](x), F.relu(branch))
        torch.testing.assert_close(res.layer1[0](x), F.relu(branch + x))
    assert all(b.downsample is None for s in plain.stages for b in s)


def test_width_multiplier_and_stochastic_depth():
    half = reslab.create_model("resnet18", width=0.5)
    assert half.num_features == 256 and half.conv1.out_channels == 32
    m = reslab.create_model("resnet50", drop_path_rate=0.2)
    rates = [b.drop_path.p if b.drop_path is not None else 0.0 for s in m.stages for b in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    dp = DropPath(0.5).train()
    out = dp(torch.ones(2000, 3, 2, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped whole
    assert abs(out.mean().item() - 1.0) < 0.1
    assert torch.equal(dp.eval()(torch.ones(3, 3)), torch.ones(3, 3))


def test_layer_set_is_pluggable_without_touching_model_code():
    class CountingConv(torch.nn.Conv2d):
        built = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            CountingConv.built += 1

    custom = LayerSet(**{**TORCH_LAYERS.__dict__, "name": "counting", "conv2d": CountingConv})
    model = reslab.create_model("resnet18", layers=custom)
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert CountingConv.built == n_convs == 20


def test_a_hand_built_resnet_saves_and_rebuilds_from_its_checkpoint(tmp_path):
    model = randomize_bn(
        ResNet(
            "bottleneck",
            (1, 2),
            7,
            in_chans=2,
            stage_widths=(8, 16),
            groups=2,
            width_per_group=8,
            shortcut="avg",
            stem_type="deep",
            stem_width=8,
        )  # fmt: skip
    ).eval()
    model.set_data_config(class_names=tuple("abcdefg"), input_size=(2, 40, 40))
    path = reslab.save_checkpoint(tmp_path / "m.safetensors", model)
    again = reslab.load_checkpoint(path).eval()
    assert again.config == model.config and again.class_names == tuple("abcdefg")
    x = torch.rand(2, 2, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_config_changes_only_through_named_methods():
    model = reslab.create_model("resnet20")
    with pytest.raises(TypeError):
        model.default_cfg["class_names"] = ["x"] * 10  # a read-only view
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.config.arch.num_classes = 3
    model.reset_classifier(3, class_names=("a", "b", "c"))
    assert model.fc.out_features == 3 and model.config.arch.num_classes == 3
    assert model.default_cfg["class_names"] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        model.set_data_config(class_names=("a", "b"))


def test_a_custom_block_class_runs_but_cannot_be_saved(tmp_path):
    from reslab.models import BasicBlock

    class MyBlock(BasicBlock):
        pass

    model = ResNet(MyBlock, (1, 1), 3, stage_widths=(8, 16))
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError, match="custom block"):
        reslab.save_checkpoint(tmp_path / "m.safetensors", model)


def test_a_width_that_leaves_a_bottleneck_empty_is_refused_when_built():
    # ResNeXt-50 32x4d: int(64 * 0.1) = 6 planes, int(6 * 4 / 64) = 0 channels per group.
    with pytest.raises(ValueError, match="0 channels per group"):
        reslab.create_model("resnext50_32x4d", width=0.1)
    # 0.25: 16 planes, int(16 * 4 / 64) = 1 channel per group, 32 in all: it runs.
    model = reslab.create_model("resnext50_32x4d", width=0.25, num_classes=3)
    assert model.layer1[0].conv2.weight.shape == (32, 1, 3, 3)
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_mean_and_std_must_fit_the_input_channels():
    model = reslab.create_model("resnet20", num_classes=10)
    with pytest.raises(ValueError, match=r"mean \(1 values\) and std \(2\)"):
        model.set_data_config(mean=(0.5,), std=(0.2, 0.3))
    with pytest.raises(ValueError, match=r"input channel \(3\)"):
        model.set_data_config(mean=(0.5, 0.5), std=(0.2, 0.3))
    model.set_data_config(mean=(0.5,), std=(0.25,))  # one value for all channels is fine


def test_a_pad_shortcut_cannot_narrow():
    # Option A pads new channels with zeros; from 64 to 32 it would silently drop 32 of them.
    with pytest.raises(ValueError, match="cannot go from 64 to 32 channels"):
        reslab.create_model("resnet20", stage_widths=(64, 32, 16), num_classes=10)
