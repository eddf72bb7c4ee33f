"""Every registered model through the same checks (in the style of timm's test_models).

References are independent: torchvision and timm instances, the paper's Table 6, and
hand-written forward passes.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import reslab
from conftest import randomize_bn
from reslab.models import get_model_spec

ALL = reslab.list_models()
TORCHVISION = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
]
TIMM_SAME_ARCH = {  # reslab name -> timm model with the same architecture
    "resnet18d": "resnet18d",
    "resnet26d": "resnet26d",
    "resnet34d": "resnet34d",
    "resnet50d": "resnet50d",
    "resnet101d": "resnet101d",
    "resnet152d": "resnet152d",
    "resnet50c": "resnet50c",
    "xresnet18": "resnet18d",
    "xresnet34": "resnet34d",
    "xresnet50": "resnet50d",
    "xresnet101": "resnet101d",
    "xresnet152": "resnet152d",
}
# The paper's Table 6 (CIFAR-10), parameters in millions.
PAPER_PARAMS_M = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet1202": 19.4,
}
BIG = {
    "resnet1202",
    "wide_resnet101_2",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "resnet152",
    "resnet152d",
    "xresnet152",
    "resnet152_v1",
}


def _plain_params(stem_kernel: int, stem_width: int, widths, blocks, num_classes: int) -> int:
    """The paper's plain nets counted layer by layer: a ``k x k`` stem conv from RGB + BN, then
    per stage ``2 * blocks`` 3x3 convs (no bias) each followed by a BN (weight and bias), the
    first conv of a stage taking the previous width; no shortcut weights; then the fc."""
    total = 3 * stem_width * stem_kernel**2 + 2 * stem_width
    width_in = stem_width
    for width, n in zip(widths, blocks):
        for i in range(2 * n):
            total += (width_in if i == 0 else width) * width * 9 + 2 * width
        width_in = width
    return total + widths[-1] * num_classes + num_classes


# CIFAR plain-(6n+2): 3x3 stem 3->16, three stages of n blocks at widths 16/32/64, fc 64->10.
# ImageNet plain-18/34: 7x7 stem 3->64, torchvision's stage widths and block counts, fc 512->1000.
PLAIN_PARAMS = {
    **{
        f"plain{6 * n + 2}": _plain_params(3, 16, (16, 32, 64), (n,) * 3, 10)
        for n in (3, 5, 7, 9, 18)
    },
    "plain18": _plain_params(7, 64, (64, 128, 256, 512), (2, 2, 2, 2), 1000),
    "plain34": _plain_params(7, 64, (64, 128, 256, 512), (3, 4, 6, 3), 1000),
}


def test_plain_counts_by_hand():
    # plain20 written out in full: stem 432 + 32, stage 1: 6 x (2304 + 32), stage 2: 4608 +
    # 5 x 9216 + 6 x 64, stage 3: 18432 + 5 x 36864 + 6 x 128, fc 650.
    assert (
        PLAIN_PARAMS["plain20"]
        == 464 + 6 * 2336 + 4608 + 5 * 9216 + 384 + 18432 + 5 * 36864 + 768 + 650
    )
    # ImageNet plain nets = torchvision's ResNet minus its downsample projections.
    for name in ("plain18", "plain34"):
        tv = meta(getattr(torchvision.models, "resnet" + name[5:]))
        shortcut = sum(p.numel() for n, p in tv.named_parameters() if "downsample" in n)
        assert PLAIN_PARAMS[name] == n_params(tv) - shortcut


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(fn, *args, **kwargs):
    with torch.device("meta"):
        return fn(*args, **kwargs)


def small_input(name: str, batch: int = 2) -> torch.Tensor:
    # ImageNet nets at 64 px keep every stage's spatial size >= 2 and the test fast.
    res = 32 if get_model_spec(name).cfg["input_size"][1] <= 32 else 64
    return torch.rand(batch, 3, res, res)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    if name in BIG:
        pytest.skip("covered by the slow variant")
    _forward_backward(name)


def full_input(name: str, batch: int = 2) -> torch.Tensor:
    """Images at the size the model is built for (224 px for ImageNet nets, 32 for CIFAR)."""
    return torch.rand(batch, *get_model_spec(name).cfg["input_size"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG))
def test_forward_backward_big(name):
    """The biggest models at full size: full depth and width, full input resolution."""
    _forward_backward(name, full_input(name))


def _forward_backward(name, x=None):
    model = reslab.create_model(name, num_classes=7)
    x = small_input(name) if x is None else x
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_param_count_against_reference(name):
    ours = n_params(meta(reslab.create_model, name))
    if name in TORCHVISION:
        assert ours == n_params(meta(getattr(torchvision.models, name)))
    elif name.endswith("_v1"):  # v1 moves a stride, not a weight
        assert ours == n_params(meta(getattr(torchvision.models, name[:-3])))
    elif name in TIMM_SAME_ARCH:
        assert ours == n_params(meta(timm.create_model, TIMM_SAME_ARCH[name]))
    elif name in PAPER_PARAMS_M:
        assert round(ours / 1e6, 2 if ours < 1e6 else 1) == PAPER_PARAMS_M[name]
    elif name in PLAIN_PARAMS:
        assert ours == PLAIN_PARAMS[name]
    elif name.startswith("fastbook_"):
        assert ours == fastbook_params(name)
    else:
        pytest.fail(f"{name} has no independent parameter-count reference")


def fastbook_params(name: str, widths=(3, 16, 32, 64, 128, 256), classes: int = 10) -> int:
    """fastbook ch. 14's networks counted by hand: a ConvLayer is a bias-free 3x3 conv and a
    BatchNorm (2 parameters per channel); a ResBlock(ni, nf) is two such layers plus, when ni
    differs from nf, a 1x1 ConvLayer on the shortcut; the head is Linear(256, classes)."""

    def conv_layer(ni: int, nf: int, k: int = 3) -> int:
        return k * k * ni * nf + 2 * nf

    def res_block(ni: int, nf: int) -> int:
        shortcut = conv_layer(ni, nf, 1) if ni != nf else 0
        return conv_layer(ni, nf) + conv_layer(nf, nf) + shortcut

    pairs = list(zip(widths[:-1], widths[1:]))
    if name == "fastbook_plain_cnn":
        body = sum(conv_layer(ni, nf) for ni, nf in pairs)
    elif name == "fastbook_resblocks":
        body = sum(res_block(ni, nf) for ni, nf in pairs)
    else:  # fastbook_resblocks_x2: ResBlock(ni, nf, stride=2), ResBlock(nf, nf)
        body = sum(res_block(ni, nf) + res_block(nf, nf) for ni, nf in pairs)
    return body + widths[-1] * classes + classes


def test_torchvision_counts_quoted_in_issue():
    quoted = {
        "resnet18": 11_689_512,
        "resnet34": 21_797_672,
        "resnet50": 25_557_032,
        "resnet101": 44_549_160,
        "resnet152": 60_192_808,
    }
    for name, count in quoted.items():
        assert n_params(meta(reslab.create_model, name)) == count


def _torchvision_pair(name, tmp_path, fmt=".pth"):
    tv = randomize_bn(getattr(torchvision.models, name)())
    path = tmp_path / f"{name}{fmt}"
    if fmt == ".pth":
        torch.save(tv.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(path))
    ours = reslab.create_model(name, normalize=False, pretrained=str(path))
    return tv, ours


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_parity_eval(name, tmp_path):
    tv, ours = _torchvision_pair(name, tmp_path, ".pth" if "50" in name else ".safetensors")
    assert list(ours.state_dict()) == list(tv.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BIG & set(TORCHVISION)))
def test_torchvision_parity_big_at_full_size(name, tmp_path):
    tv, ours = _torchvision_pair(name, tmp_path, ".safetensors")
    x = full_input(name)
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_parity_train(name, tmp_path):
    tv, ours = _torchvision_pair(name, tmp_path)
    x = torch.rand(4, 3, 64, 64)
    out_tv, out_ours = tv.train()(x), ours.train()(x)
    torch.testing.assert_close(out_ours, out_tv, atol=1e-5, rtol=1e-5)
    out_tv.square().mean().backward()
    out_ours.square().mean().backward()
    tv_params = dict(tv.named_parameters())
    for key, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, tv_params[key].grad, atol=1e-5, rtol=1e-4)
    tv_state = tv.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, tv_state[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["resnet18d", "resnet34d", "resnet50d", "resnet26d", "resnet50c", "xresnet50"]
)
def test_timm_parity(name, tmp_path):
    from safetensors.torch import save_file

    ref = randomize_bn(timm.create_model(TIMM_SAME_ARCH[name], pretrained=False))
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = reslab.create_model(name, normalize=False, pretrained=str(path))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)


def test_v1_puts_the_stride_on_the_first_1x1(tmp_path):
    # Reference: torchvision's ResNet-50 with each downsampling block's strides moved by hand.
    tv = randomize_bn(torchvision.models.resnet50())
    for stage in (tv.layer2, tv.layer3, tv.layer4):
        stage[0].conv1.stride, stage[0].conv2.stride = (2, 2), (1, 1)
    ours = reslab.create_model("resnet50_v1", normalize=False)
    ours.load_state_dict(tv.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), tv.eval()(x), atol=1e-5, rtol=1e-5)
    # And the switch works for any bottleneck model.
    m = reslab.create_model("resnext50_32x4d", stride_in_1x1=True)
    assert m.layer3[0].conv1.stride == (2, 2) and m.layer3[0].conv2.stride == (1, 1)


def test_zero_init_last_bn():
    m = reslab.create_model("xresnet50")
    lasts = [b.bn3.weight for stage in m.stages for b in stage]
    assert all(torch.count_nonzero(w) == 0 for w in lasts)
    m18 = reslab.create_model("xresnet18")
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for s in m18.stages for b in s)
    assert torch.count_nonzero(reslab.create_model("resnet18").layer1[0].bn2.weight) > 0
