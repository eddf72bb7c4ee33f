"""The registry of named ResNets and :func:`build_model`.

Each entry is an architecture (keyword arguments of :class:`ResNet`) plus a
default config (input size, normalisation, number of classes).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from reslab.layers import LayerSet
from reslab.models.config import ArchConfig, DataConfig
from reslab.models.normalize import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputNormalize,
    channel_stats,
)
from reslab.models.resnet import ResNet

__all__ = [
    "ARCH_OPTIONS",
    "ModelSpec",
    "UnknownModelError",
    "build_model",
    "get_model_spec",
    "list_models",
]


# What ``create_model(name, **overrides)`` may change (in_chans/num_classes have own arguments).
ARCH_OPTIONS = frozenset(f.name for f in dataclasses.fields(ArchConfig)) - {
    "in_chans",
    "num_classes",
}


class UnknownModelError(ValueError):
    """Raised for a model name that is not in the registry."""


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture and its default data config."""

    name: str
    arch: dict[str, Any]
    description: str
    cfg: dict[str, Any] = field(default_factory=dict)


IMAGENET_CFG = {
    "input_size": (3, 224, 224),
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "num_classes": 1000,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
}
CIFAR_CFG = {
    "input_size": (3, 32, 32),
    "mean": CIFAR10_MEAN,
    "std": CIFAR10_STD,
    "num_classes": 10,
    "crop_pct": 1.0,
    "interpolation": "bilinear",
}

_REGISTRY: dict[str, ModelSpec] = {}


def _register(name: str, description: str, cfg: dict | None = None, **arch: Any) -> None:
    _REGISTRY[name] = ModelSpec(name, arch, description, dict(cfg or IMAGENET_CFG))


BASIC, BOTTLE = "basic", "bottleneck"
DEPTHS = {
    18: (BASIC, (2, 2, 2, 2)),
    26: (BOTTLE, (2, 2, 2, 2)),
    34: (BASIC, (3, 4, 6, 3)),
    50: (BOTTLE, (3, 4, 6, 3)),
    101: (BOTTLE, (3, 4, 23, 3)),
    152: (BOTTLE, (3, 8, 36, 3)),
}

# torchvision's family (bottlenecks are "v1.5": stride on the 3x3).
for _d in (18, 34, 50, 101, 152):
    _b, _l = DEPTHS[_d]
    _register(f"resnet{_d}", f"ResNet-{_d} (torchvision)", block=_b, layers=_l)
for _d in (50, 101):
    _register(
        f"wide_resnet{_d}_2",
        f"Wide ResNet-{_d}-2",
        block=BOTTLE,
        layers=DEPTHS[_d][1],
        width_per_group=128,
    )
for _d, _g, _w in ((50, 32, 4), (101, 32, 8), (101, 64, 4)):
    _register(
        f"resnext{_d}_{_g}x{_w}d",
        f"ResNeXt-{_d} {_g}x{_w}d",
        block=BOTTLE,
        layers=DEPTHS[_d][1],
        groups=_g,
        width_per_group=_w,
    )

# The original paper's v1 bottleneck: the first 1x1 conv strides.
for _d in (50, 101, 152):
    _register(
        f"resnet{_d}_v1",
        f"ResNet-{_d} v1 (stride on the 1x1, as in the paper)",
        block=BOTTLE,
        layers=DEPTHS[_d][1],
        stride_in_1x1=True,
    )

# Bag of tricks: ResNet-C (deep stem) and ResNet-D (deep stem + avg-pool shortcut), as in timm.
_register(
    "resnet50c",
    "ResNet-50-C: deep 3x3 stem",
    block=BOTTLE,
    layers=DEPTHS[50][1],
    stem_type="deep",
    stem_width=32,
)
for _d in (18, 26, 34, 50, 101, 152):
    _b, _l = DEPTHS[_d]
    _register(
        f"resnet{_d}d",
        f"ResNet-{_d}-D: deep stem, avg-pool shortcut (timm)",
        block=_b,
        layers=_l,
        stem_type="deep",
        stem_width=32,
        shortcut="avg",
    )

# fastai's xresnet: stem 3->32->32->64, avg-pool shortcut, last BN of each block zeroed.
for _d in (18, 34, 50, 101, 152):
    _b, _l = DEPTHS[_d]
    _register(
        f"xresnet{_d}",
        f"fastai xresnet{_d}",
        block=_b,
        layers=_l,
        stem_type="deep",
        stem_width=32,
        shortcut="avg",
        zero_init_last=True,
    )

# The paper's CIFAR nets (section 4.2): 6n+2 layers, 16/32/64 channels, option A shortcuts.
_CIFAR_ARCH = {"block": BASIC, "stage_widths": (16, 32, 64), "small_input": True}
for _depth in (20, 32, 44, 56, 110, 1202):
    _n = (_depth - 2) // 6
    _register(
        f"resnet{_depth}",
        f"CIFAR ResNet-{_depth} (option A shortcuts)",
        CIFAR_CFG,
        layers=(_n,) * 3,
        shortcut="pad",
        **_CIFAR_ARCH,
    )
# Plain twins: the same layers without shortcuts (the degradation experiment).
for _depth in (20, 32, 44, 56, 110):
    _n = (_depth - 2) // 6
    _register(
        f"plain{_depth}",
        f"CIFAR plain-{_depth} (no shortcuts)",
        CIFAR_CFG,
        layers=(_n,) * 3,
        shortcut="none",
        **_CIFAR_ARCH,
    )
for _d in (18, 34):
    _register(
        f"plain{_d}",
        f"plain-{_d} (ResNet-{_d} without shortcuts)",
        block=BASIC,
        layers=DEPTHS[_d][1],
        shortcut="none",
    )


# fastbook's chapter 14 ("ResNets"), its first three networks, on Imagenette at 128 px: five
# stride-2 stages 3->16->32->64->128->256, no stem, then average pooling and a linear head.
FASTBOOK_CFG = {**IMAGENET_CFG, "input_size": (3, 128, 128), "num_classes": 10, "crop_pct": 1.0}
_FASTBOOK_ARCH = {
    "stage_widths": (16, 32, 64, 128, 256),
    "stage_strides": (2, 2, 2, 2, 2),
    "stem_type": "none",
}
_register(
    "fastbook_plain_cnn",
    "fastbook ch. 14 (1): five stride-2 conv-BN-ReLU layers, no shortcuts",
    FASTBOOK_CFG,
    block="conv",
    layers=(1,) * 5,
    shortcut="none",
    **_FASTBOOK_ARCH,
)
for _n, _which in ((1, "(2): the same stages as ResBlocks"), (2, "(3): two ResBlocks per stage")):
    _register(
        "fastbook_resblocks" if _n == 1 else f"fastbook_resblocks_x{_n}",
        f"fastbook ch. 14 {_which} (avg-pool + 1x1 shortcut, BatchZero)",
        FASTBOOK_CFG,
        block=BASIC,
        layers=(_n,) * 5,
        shortcut="avg",
        zero_init_last=True,
        **_FASTBOOK_ARCH,
    )


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in registry order."""
    return [name for name in _REGISTRY if fnmatch.fnmatch(name, pattern)]


def get_model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `reslab list`"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def _make_normalize(
    normalize: bool | dict | InputNormalize | None, spec_cfg: dict, in_chans: int
) -> InputNormalize | None:
    if normalize is None or normalize is False:
        return None
    if isinstance(normalize, InputNormalize):
        return normalize
    if isinstance(normalize, dict):
        return InputNormalize(**normalize)
    return InputNormalize(
        channel_stats(spec_cfg["mean"], in_chans), channel_stats(spec_cfg["std"], in_chans)
    )


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    layers: str | LayerSet = "torch",
    normalize: bool | dict | InputNormalize | None = True,
    **overrides: Any,
) -> ResNet:
    """Build a registered model with random weights (see :func:`reslab.create_model`)."""
    spec = get_model_spec(name)
    unknown = set(overrides) - ARCH_OPTIONS
    if unknown:
        raise TypeError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))}")
    cfg = spec.cfg
    norm = _make_normalize(normalize, cfg, in_chans)
    stats = norm.normalization if norm is not None else None
    data = DataConfig(
        input_size=(in_chans, *cfg["input_size"][1:]),
        mean=stats.mean if stats else channel_stats(cfg["mean"], in_chans),
        std=stats.std if stats else channel_stats(cfg["std"], in_chans),
        crop_pct=cfg["crop_pct"],
        interpolation=cfg["interpolation"],
    )
    arch = {**spec.arch, **overrides}
    return ResNet(
        num_classes=cfg["num_classes"] if num_classes is None else num_classes,
        in_chans=in_chans,
        layer_set=layers,
        normalize=norm,
        name=name,
        data=data,
        **arch,
    )
