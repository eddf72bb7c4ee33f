"""Layer sets: the building blocks a model is assembled from.

A :class:`LayerSet` names one class per building block. The models in
:mod:`reslab.models` only ever instantiate layers through a layer set, so the
torch.nn implementation and the from-scratch one (``reslab.layers.scratch``)
are interchangeable: both take the same constructor arguments and own
parameters and buffers with the same names, so state dicts move freely.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LayerSet", "TORCH_LAYERS", "get_layer_set", "available_layer_sets"]


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


def _scratch_layers() -> LayerSet:
    # Imported lazily: the scratch set is optional reading, not a start-up cost.
    from reslab.layers.scratch import SCRATCH_LAYERS

    return SCRATCH_LAYERS


_FACTORIES = {"torch": lambda: TORCH_LAYERS, "scratch": _scratch_layers}


def available_layer_sets() -> list[str]:
    return sorted(_FACTORIES)


def get_layer_set(layers: str | LayerSet) -> LayerSet:
    """Return a layer set by name (``"torch"`` or ``"scratch"``) or pass one through."""
    if isinstance(layers, LayerSet):
        return layers
    if layers not in _FACTORIES:
        raise ValueError(f"unknown layer set {layers!r}; choose one of {available_layer_sets()}")
    return _FACTORIES[layers]()
