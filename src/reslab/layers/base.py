"""The :class:`LayerSet` record and the torch.nn layer set."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LayerSet", "TORCH_LAYERS"]


@dataclass(frozen=True)
class LayerSet:
    """One class per building block, each with torch.nn's constructor signature."""

    name: str
    conv2d: type[nn.Module]
    batch_norm2d: type[nn.Module]
    relu: type[nn.Module]
    max_pool2d: type[nn.Module]
    avg_pool2d: type[nn.Module]
    adaptive_avg_pool2d: type[nn.Module]
    linear: type[nn.Module]
    flatten: type[nn.Module]
    sequential: type[nn.Module]
    identity: type[nn.Module]


TORCH_LAYERS = LayerSet(
    name="torch",
    conv2d=nn.Conv2d,
    batch_norm2d=nn.BatchNorm2d,
    relu=nn.ReLU,
    max_pool2d=nn.MaxPool2d,
    avg_pool2d=nn.AvgPool2d,
    adaptive_avg_pool2d=nn.AdaptiveAvgPool2d,
    linear=nn.Linear,
    flatten=nn.Flatten,
    sequential=nn.Sequential,
    identity=nn.Identity,
)
