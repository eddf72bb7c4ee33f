"""ResNet models: blocks, the configurable :class:`ResNet`, the registry, input normalisation."""

from reslab.models.blocks import BasicBlock, Bottleneck, DropPath, PadShortcut
from reslab.models.normalize import InputNormalize
from reslab.models.registry import (
    ModelSpec,
    UnknownModelError,
    build_model,
    get_model_spec,
    list_models,
)
from reslab.models.resnet import Backbone, ResNet

__all__ = [
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "DropPath",
    "InputNormalize",
    "ModelSpec",
    "PadShortcut",
    "ResNet",
    "UnknownModelError",
    "build_model",
    "get_model_spec",
    "list_models",
]
