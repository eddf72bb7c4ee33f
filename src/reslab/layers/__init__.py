"""Layer sets: the building blocks a model is assembled from.

A :class:`LayerSet` names one class per building block. The models in
:mod:`reslab.models` only ever instantiate layers through a layer set, so the
torch.nn implementation and the from-scratch one (``reslab.layers.scratch``)
are interchangeable: both take the same constructor arguments and own
parameters and buffers with the same names, so state dicts move freely.
"""

from __future__ import annotations

from reslab.layers.base import TORCH_LAYERS, LayerSet

__all__ = ["LayerSet", "TORCH_LAYERS", "get_layer_set", "available_layer_sets"]


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
