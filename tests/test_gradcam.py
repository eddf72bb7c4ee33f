"""Grad-CAM, Grad-CAM++ and saliency against references written here with module hooks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.analysis.gradcam import gradcam

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- references
def hooked_activations_and_grads(model, images, target, layer_name):
    """The layer's output and d(target logits)/d(output), from a forward hook and a full
    backward hook on the module, with a plain .backward() (on a frozen copy of the model,
    with the input requiring grad: no time spent on weight gradients)."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    module = dict(model.named_modules())[layer_name]
    seen = {}
    module.register_forward_hook(lambda m, inp, out: seen.update(act=out.detach().clone()))
    module.register_full_backward_hook(lambda m, gin, gout: seen.update(grad=gout[0].clone()))
    logits = model(images.clone().requires_grad_(True))
    target = logits.argmax(1) if target is None else torch.as_tensor(target)
    target = target.expand(len(images)) if target.dim() == 0 else target
    logits[torch.arange(len(images)), target].sum().backward()
    return seen["act"], seen["grad"]


def upsample_and_scale(maps, size):
    """Bilinear upsampling, then min-max scaling per map; maps constant before upsampling
    (all zero, or 1x1) become zero."""
    big = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    out = torch.zeros_like(big)
    for i, (m, b) in enumerate(zip(maps, big)):
        if m.max() > m.min():
            out[i] = (b - b.min()) / (b.max() - b.min())
    return out


def reference_gradcam(model, images, target, layer_name):
    act, grad = hooked_activations_and_grads(model, images, target, layer_name)
    weights = grad.mean(dim=(2, 3))
    cam = torch.relu(torch.einsum("nk,nkhw->nhw", weights, act))
    return upsample_and_scale(cam, images.shape[-2:])


def reference_gradcam_pp(model, images, target, layer_name):
    act, grad = hooked_activations_and_grads(model, images, target, layer_name)
    n, k = act.shape[:2]
    weights = torch.zeros(n, k)
    for i in range(n):
        for c in range(k):
            g, a = grad[i, c], act[i, c]
            denom = 2 * g**2 + a.sum() * g**3
            alpha = g**2 / denom
            alpha[denom == 0] = 0.0
            weights[i, c] = (alpha * g.clamp(min=0)).sum()
    cam = torch.relu(torch.einsum("nk,nkhw->nhw", weights, act))
    return upsample_and_scale(cam, images.shape[-2:])


def reference_saliency(model, images, target):
    model = copy.deepcopy(model).eval()
    maps = []
    for i in range(len(images)):
        x = images[i : i + 1].clone().requires_grad_(True)
        logits = model(x)[0]
        t = int(logits.argmax()) if target is None else int(target[i])
        (g,) = torch.autograd.grad(logits[t], x)
        maps.append(g[0].abs().max(dim=0).values)
    return upsample_and_scale(torch.stack(maps), images.shape[-2:])


def assert_maps_close(ours, ref):
    assert ours.shape == ref.shape
    assert ours.min() >= 0 and ours.max() <= 1
    # Not a comparison of all-zero maps: the references must carry a picture.
    assert (ref.flatten(1).amax(1) == 1).all()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def make(name, size, **kwargs):
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model(name, num_classes=10, **kwargs)).eval()
    return model, torch.rand(3, 3, size, size)


# (model, input size, options, layer); layer None is the model's last stage.
CASES = [
    ("resnet18", 64, {}, None),
    ("resnet18", 64, {}, "layer3"),
    ("resnet20", 32, {}, None),
    ("resnet20", 32, {}, "layer2.1"),
    ("resnet50d", 64, {"width": 0.25}, None),
    ("resnet20", 32, {"layers": "scratch"}, None),
    ("resnet18", 64, {"layers": "scratch"}, "layer3.1"),
]


@pytest.mark.parametrize("name, size, kwargs, layer", CASES)
def test_gradcam_equals_hooked_reference(name, size, kwargs, layer):
    model, x = make(name, size, **kwargs)
    expected_layer = layer or model.stage_names[-1]
    ref = reference_gradcam(model, x, None, expected_layer)
    assert_maps_close(gradcam(model, x, layer=layer), ref)


@pytest.mark.parametrize("name, size, kwargs, layer", CASES[::2])
def test_gradcam_pp_equals_hooked_reference(name, size, kwargs, layer):
    model, x = make(name, size, **kwargs)
    ref = reference_gradcam_pp(model, x, None, layer or model.stage_names[-1])
    assert_maps_close(gradcam(model, x, layer=layer, method="gradcam++"), ref)


@pytest.mark.parametrize(
    "name, size, kwargs",
    [("resnet20", 32, {}), ("resnet18", 32, {}), ("resnet20", 32, {"layers": "scratch"})],
)
def test_saliency_equals_input_gradient(name, size, kwargs):
    model, x = make(name, size, **kwargs)
    target = torch.tensor([1, 7, 3])
    assert_maps_close(
        gradcam(model, x, target, method="saliency"), reference_saliency(model, x, target)
    )
    assert_maps_close(gradcam(model, x, method="saliency"), reference_saliency(model, x, None))


def test_default_layer_is_the_last_stage():
    assert reslab.create_model("resnet18").stage_names[-1] == "layer4"
    assert reslab.create_model("resnet20").stage_names[-1] == "layer3"
    model, x = make("resnet20", 32)
    assert_maps_close(gradcam(model, x), reference_gradcam(model, x, None, "layer3"))
    # A differently chosen layer gives a different map (the default is not ignored).
    assert not torch.allclose(gradcam(model, x), gradcam(model, x, layer="layer2"), atol=1e-3)


# Every model with torch's layers; one of each kind with the from-scratch layers (which
# differ only in the layer classes).
SCRATCH_SAMPLE = [
    "resnet18",
    "resnet50",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "resnet50_v1",
    "resnet50c",
    "resnet26d",
    "xresnet18",
    "resnet20",
    "plain20",
    "plain18",
]


EVERY_MODEL = [(name, "torch") for name in reslab.list_models()]
EVERY_MODEL += [(name, "scratch") for name in SCRATCH_SAMPLE]


@pytest.mark.parametrize("name, layers", EVERY_MODEL)
def test_every_registered_model(name, layers):
    model = reslab.create_model(name, num_classes=10, width=0.25, layers=layers)
    randomize_bn(model).eval()
    if name == "resnet1202":  # 600 random residual branches overflow to inf: damp them
        with torch.no_grad():
            for block in (b for stage in model.stages for b in stage):
                block.last_bn().weight.mul_(0.05)
    size = min(model.default_cfg["input_size"][-1], 64)  # 64 px ImageNet nets, 32 px CIFAR
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    ref = reference_gradcam(model, x, None, model.stage_names[-1])
    assert_maps_close(gradcam(model, x), ref)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "saliency"])
def test_batch_invariance(method):
    model, _ = make("resnet20", 32)
    x = torch.rand(4, 3, 32, 32)
    target = torch.tensor([0, 5, 9, 2])
    together = gradcam(model, x, target, method=method)
    alone = torch.cat(
        [gradcam(model, x[i : i + 1], target[i : i + 1], method=method) for i in range(4)]
    )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        gradcam(model, x, target, method=method, batch_size=3), together, atol=1e-5, rtol=0
    )


# ------------------------------------------------------------------ the model is left alone
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks",
)


def assert_no_hooks(model):
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            assert not getattr(module, attr, {}), f"{name or 'model'}.{attr} left behind"


def snapshot(model):
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    training = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return grads, flags, training, state


def assert_same(before, after):
    for b, a in zip(before[:3], after[:3]):
        assert a.keys() == b.keys()
        for k in b:
            if isinstance(b[k], torch.Tensor):
                assert torch.equal(a[k], b[k]), k
            else:
                assert a[k] == b[k], k
    for k, v in before[3].items():
        assert torch.equal(after[3][k], v), k


@pytest.mark.parametrize("layers", ["torch", "scratch"])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "saliency"])
def test_model_left_untouched(layers, method):
    model, x = make("resnet20", 32, layers=layers)
    model.train()
    model.layer1.eval()  # a mixed state must come back as it was, module by module
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.5)
    model.layer3[0].conv1.weight.grad = torch.arange(
        model.layer3[0].conv1.weight.numel(), dtype=torch.float
    ).view_as(model.layer3[0].conv1.weight)
    before = snapshot(model)
    cams = gradcam(model, x, method=method)
    assert_same(before, snapshot(model))
    assert model.fc.bias.grad is None
    assert_no_hooks(model)
    # Eval-mode maps although the model was training (BN running stats, no stat updates).
    eval_model = copy.deepcopy(model).eval()
    torch.testing.assert_close(cams, gradcam(eval_model, x, method=method), atol=1e-6, rtol=0)


def test_hooks_removed_and_mode_restored_on_error():
    model, x = make("resnet18", 32)
    model.train()
    before = snapshot(model)
    for kwargs in ({"target": 10}, {"layer": "layer4.0.relu"}, {"layer": "fc"}):
        with pytest.raises(ValueError):
            gradcam(model, x, **kwargs)
        assert_no_hooks(model)
        assert_same(before, snapshot(model))


def test_frozen_model_and_no_grad_context():
    model, x = make("resnet20", 32)
    ref = reference_gradcam(model, x, None, "layer3")
    model.requires_grad_(False)
    with torch.no_grad():
        cams = gradcam(model, x)
    assert_maps_close(cams, ref)
    assert not any(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        assert_maps_close(gradcam(model, x), ref)


# ----------------------------------------------------------------------------- targets, shapes
def test_targets_int_list_tensor_and_none():
    model, x = make("resnet20", 32)
    for target in (4, [2, 9, 0], torch.tensor([3, 3, 8]), (1, 2, 3)):
        expected = torch.as_tensor(target)
        assert_maps_close(
            gradcam(model, x, target), reference_gradcam(model, x, expected, "layer3")
        )
    with torch.no_grad():
        top1 = model(x).argmax(1)
    assert_maps_close(gradcam(model, x), reference_gradcam(model, x, top1, "layer3"))
    # The target matters: another class gives other maps.
    assert not torch.allclose(gradcam(model, x, 0), gradcam(model, x, 1), atol=1e-3)


@pytest.mark.parametrize(
    "target, error",
    [
        (10, ValueError),
        (-1, ValueError),
        ([1, 2], ValueError),
        ([1.0, 2.0, 3.0], TypeError),
        (torch.tensor([True, False, True]), TypeError),
    ],
)
def test_bad_targets(target, error):
    model, x = make("resnet20", 32)
    with pytest.raises(error):
        gradcam(model, x, target)


def test_shape_range_and_input_size():
    model, _ = make("resnet18", 64)
    x = torch.rand(2, 3, 48, 80)
    for method in ("gradcam", "gradcam++", "saliency"):
        cams = gradcam(model, x, method=method)
        assert cams.shape == (2, 48, 80)
        assert cams.dtype == torch.float32
        assert torch.isfinite(cams).all()
        assert cams.min() == 0 and cams.max() == 1
    assert gradcam(model, x[:0]).shape == (0, 48, 80)


def test_constant_map_is_zero_not_nan():
    # A 1x1 feature map (resnet18's layer4 at 32 px) has no "where": an all-zero map.
    model, _ = make("resnet18", 32)
    for method in ("gradcam", "gradcam++"):
        cams = gradcam(model, torch.rand(2, 3, 32, 32), method=method)
        assert torch.equal(cams, torch.zeros(2, 32, 32))
    # A zero classifier: zero gradients, zero weights, an all-zero map, no division by zero.
    model.fc.weight.data.zero_()
    model.fc.bias.data[:] = torch.arange(10.0)
    assert torch.equal(gradcam(model, torch.rand(2, 3, 64, 64)), torch.zeros(2, 64, 64))


# ----------------------------------------------------------------------------- layers
def test_layer_as_module_or_name():
    model, x = make("resnet18", 64)
    torch.testing.assert_close(
        gradcam(model, x, layer=model.layer3), gradcam(model, x, layer="layer3")
    )
    with pytest.raises(ValueError, match="not a module of the model"):
        gradcam(model, x, layer=nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize(
    "layer, match",
    [
        ("layer9", "unknown layer 'layer9'"),
        ("layer4.7", "unknown layer"),
        ("fc", "4-D"),
        ("layer4.0.relu", "ran 2 times"),
    ],
)
def test_layer_errors(layer, match):
    model, x = make("resnet18", 32)
    with pytest.raises(ValueError, match=match):
        gradcam(model, x, layer=layer)


def test_saliency_takes_no_layer_and_unknown_method():
    model, x = make("resnet20", 32)
    with pytest.raises(ValueError, match="layer=None"):
        gradcam(model, x, layer="layer3", method="saliency")
    with pytest.raises(ValueError, match="unknown method"):
        gradcam(model, x, method="cam")


class TinyNet(nn.Module):
    """No stage_names: the default layer is the last child with a map larger than 1x1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 4-D but 1x1: skipped
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.act(self.conv(x))
        return self.fc(self.pool(self.conv2(x)).flatten(1))


def test_default_layer_of_a_model_without_stages():
    model, x = TinyNet().eval(), torch.rand(3, 3, 12, 12)
    assert_maps_close(gradcam(model, x), reference_gradcam(model, x, None, "conv2"))
    # The in-place ReLU after "conv" does not corrupt that layer's activations.
    assert_maps_close(gradcam(model, x, layer="conv"), reference_gradcam_inplace_safe(model, x))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 5))
    with pytest.raises(ValueError, match="pass layer="):
        gradcam(mlp, x)


def reference_gradcam_inplace_safe(model, x):
    # The same model with an out-of-place ReLU: a full backward hook then sees conv's output.
    safe = copy.deepcopy(model)
    safe.act = nn.ReLU()
    return reference_gradcam(safe, x, None, "conv")
