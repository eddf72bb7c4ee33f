"""The scratch layer set against torch.nn: signatures, init, state dicts, reprs, numbers."""

from __future__ import annotations

import inspect
from collections import OrderedDict

import pytest
import torch
from torch import nn

import reslab
from reslab.layers import TORCH_LAYERS, get_layer_set
from reslab.layers import scratch as S

PAIRS = [(getattr(S, cls.__name__), cls) for cls in (
    nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.Linear, nn.Flatten, nn.Sequential, nn.Identity,
)]  # fmt: skip

# (class name, args, kwargs, input shape)
CASES = [
    ("Conv2d", (4, 6, 3), {}, (2, 4, 7, 7)),
    (
        "Conv2d",
        (4, 6, (3, 2)),
        {"stride": 2, "padding": 1, "dilation": (2, 1), "groups": 2, "bias": False},
        (2, 4, 9, 8),
    ),
    ("Conv2d", (4, 4, 3), {"padding": "same", "padding_mode": "reflect"}, (2, 4, 5, 6)),
    ("Conv2d", (4, 4, 3), {"padding": 1, "padding_mode": "circular"}, (2, 4, 5, 6)),
    ("Conv2d", (4, 8, 1), {"stride": 2, "bias": False}, (2, 4, 6, 6)),
    ("BatchNorm2d", (5,), {}, (3, 5, 4, 4)),
    ("BatchNorm2d", (5,), {"momentum": None, "eps": 1e-3}, (3, 5, 4, 4)),
    ("BatchNorm2d", (5,), {"affine": False, "track_running_stats": False}, (3, 5, 4, 4)),
    ("BatchNorm2d", (5,), {"bias": False}, (3, 5, 4, 4)),
    ("ReLU", (), {}, (2, 3, 4, 4)),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1}, (2, 3, 9, 9)),
    ("MaxPool2d", ((2, 3),), {"ceil_mode": True, "dilation": 2}, (2, 3, 9, 8)),
    ("AvgPool2d", (2, 2), {"ceil_mode": True, "count_include_pad": False}, (2, 3, 7, 7)),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1}, (2, 3, 8, 7)),
    ("AdaptiveAvgPool2d", ((1, 1),), {}, (2, 3, 5, 5)),
    ("AdaptiveAvgPool2d", (3,), {}, (2, 3, 7, 5)),
    ("Linear", (6, 4), {}, (3, 6)),
    ("Linear", (6, 4), {"bias": False}, (2, 3, 6)),
    ("Flatten", (), {}, (2, 3, 2, 2)),
    ("Flatten", (0, 2), {}, (2, 3, 2, 2)),
    ("Identity", (3,), {"unused": 1}, (2, 3)),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


def _pair(name: str, args: tuple, kwargs: dict, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    ours = getattr(S, name)(*args, **kwargs)
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(*args, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_constructor_signatures_match(ours: type, theirs: type) -> None:
    def shape(cls: type) -> list:
        params = inspect.signature(cls.__init__).parameters.values()
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(ours) == shape(theirs)
    assert not issubclass(ours, theirs)  # a twin, not torch's class in disguise


@pytest.mark.parametrize("name, args, kwargs, shape", CASES, ids=IDS)
def test_layer_matches_torch(name: str, args: tuple, kwargs: dict, shape: tuple) -> None:
    ours, theirs = _pair(name, args, kwargs)
    # Same init from the same seed, same names, same repr.
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)
    # State dicts load strictly both ways.
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    # Forward and gradients, in training and in eval mode.
    x = torch.randn(shape)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
        g = torch.randn_like(yb)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-4, rtol=1e-4)
        for (ka, pa), (kb, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert ka == kb
            torch.testing.assert_close(pa.grad, pb.grad, atol=1e-4, rtol=1e-4)
        for (ka, ba), (kb, bb) in zip(ours.named_buffers(), theirs.named_buffers()):
            assert ka == kb
            torch.testing.assert_close(ba, bb, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_running_stats_over_steps(momentum: float | None, track: bool) -> None:
    ours, theirs = _pair("BatchNorm2d", (3,), {"momentum": momentum, "track_running_stats": track})
    for step in range(4):
        x = torch.randn(4, 3, 5, 5) * (step + 1) + step
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    for (ka, a), (kb, b) in zip(ours.named_buffers(), theirs.named_buffers()):
        assert ka == kb
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    if track:
        assert int(ours.num_batches_tracked) == 4
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_batch_norm_loads_state_dicts_without_num_batches_tracked() -> None:
    # Old checkpoints (version 1) have no num_batches_tracked; torch fills in 0, so do we.
    theirs = nn.BatchNorm2d(3)
    sd = theirs.state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1
    ours = S.BatchNorm2d(3)
    ours.num_batches_tracked.fill_(7)
    ours.load_state_dict(sd, strict=True)
    assert int(ours.num_batches_tracked) == 7  # as torch: the module's own count is kept


def test_batch_norm_rejects_non_4d() -> None:
    with pytest.raises(ValueError, match="expected 4D input"):
        S.BatchNorm2d(3)(torch.randn(2, 3))


def test_relu_inplace_in_a_conv_bn_chain() -> None:
    layers = [S.Conv2d(3, 4, 3, padding=1, bias=False), S.BatchNorm2d(4), S.ReLU(inplace=True)]
    twins = [nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True)]
    ours, theirs = S.Sequential(*layers), nn.Sequential(*twins)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 6, 6)
    ya, yb = ours(x), theirs(x)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(ours[0].weight.grad, theirs[0].weight.grad, atol=1e-4, rtol=1e-4)


def test_sequential_behaves_like_torch() -> None:
    mods = [S.Linear(3, 4), S.ReLU(), S.Linear(4, 2)]
    seq = S.Sequential(*mods)
    ref = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(seq.state_dict()) == list(ref.state_dict())
    assert len(seq) == 3 and list(seq) == mods
    assert seq[0] is mods[0] and seq[-1] is mods[2]
    assert isinstance(seq[1:], S.Sequential) and list(seq[1:]) == mods[1:]
    assert [k for k, _ in seq[1:].named_children()] == ["1", "2"]  # slices keep names, as torch
    with pytest.raises(IndexError):
        seq[3]
    named = S.Sequential(OrderedDict([("fc", S.Linear(3, 3)), ("act", S.ReLU())]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    del seq[0]
    assert [k for k, _ in seq.named_children()] == ["0", "1"]
    seq.append(S.Identity())
    assert len(seq) == 3
    seq[0] = S.Linear(3, 4)
    assert seq(torch.randn(5, 3)).shape == (5, 2)
    assert repr(S.Sequential(S.ReLU(inplace=True))) == repr(nn.Sequential(nn.ReLU(inplace=True)))


def test_layer_set_is_registered() -> None:
    ls = get_layer_set("scratch")
    assert ls is S.SCRATCH_LAYERS and ls.name == "scratch"
    fields = ["conv2d", "batch_norm2d", "relu", "max_pool2d", "avg_pool2d"]
    fields += ["adaptive_avg_pool2d", "linear", "flatten", "sequential", "identity"]
    for field in fields:
        cls = getattr(ls, field)
        assert cls.__module__.startswith("reslab.layers.scratch")
        assert cls.__name__ == getattr(TORCH_LAYERS, field).__name__


@pytest.mark.parametrize("name", reslab.list_models())
def test_every_registered_model_builds_with_scratch_layers(name: str) -> None:
    # Shapes only (meta tensors: no memory, no init cost): same keys, shapes and printout.
    with torch.device("meta"):
        ours = reslab.create_model(name, layers="scratch", normalize=False)
        theirs = reslab.create_model(name, layers="torch", normalize=False)
    a, b = ours.state_dict(), theirs.state_dict()
    assert [(k, v.shape, v.dtype) for k, v in a.items()] == [
        (k, v.shape, v.dtype) for k, v in b.items()
    ]
    assert str(ours) == str(theirs)
    assert not any(isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear) for m in ours.modules())


def _twins(name: str, width: float, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    kw = {"normalize": False, "width": width}
    theirs = reslab.create_model(name, layers="torch", **kw).to(dtype)
    ours = reslab.create_model(name, layers="scratch", **kw).to(dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _check_models(ours, theirs, x: torch.Tensor, train: bool, fwd: float, grad: float) -> None:
    ours.train(train)
    theirs.train(train)
    ya, yb = ours(x), theirs(x)
    # Tolerances relative to the largest logit/gradient: rounding grows through 50 layers.
    torch.testing.assert_close(ya, yb, atol=fwd * yb.abs().max().item(), rtol=fwd)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for (k, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
        scale = pb.grad.abs().max().item()
        torch.testing.assert_close(pa.grad, pb.grad, atol=grad * scale, rtol=grad, msg=k)
    for (k, a), (_, b) in zip(ours.named_buffers(), theirs.named_buffers()):
        torch.testing.assert_close(a, b, atol=fwd, rtol=fwd, msg=k)  # running statistics


@pytest.mark.parametrize(
    "name, width, size",
    [("resnet18d", 0.25, 64), ("resnext50_32x4d", 0.25, 64), ("resnet50_v1", 0.25, 64),
     ("resnet20", 1.0, 32)],
)  # fmt: skip
def test_models_match_across_layer_sets_eval(name: str, width: float, size: int) -> None:
    # Deep stem + avg shortcut (D), groups (ResNeXt), stride in the 1x1 (v1), pad shortcut.
    ours, theirs = _twins(name, width, torch.float32)
    _check_models(ours, theirs, torch.randn(2, 3, size, size), False, 1e-5, 1e-4)
    theirs.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("name, size", [("resnet18d", 64), ("resnet20", 32)])
def test_models_match_across_layer_sets_train(name: str, size: int) -> None:
    # Float64, and 4 images large enough that the last stage still has 2x2 maps (or more):
    # with fewer values per channel, training-mode batch norm magnifies float32 rounding
    # (for torch's own kernels too) until the two sets cannot be told apart from noise.
    ours, theirs = _twins(name, 0.25 if size == 64 else 1.0, torch.float64)
    x = torch.randn(4, 3, size, size, dtype=torch.float64)
    _check_models(ours, theirs, x, True, 1e-9, 1e-7)
    theirs.load_state_dict(ours.state_dict(), strict=True)
