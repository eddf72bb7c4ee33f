"""ResNet models: blocks, the configurable :class:`ResNet` and its typed config, the registry,
input normalisation, profiling."""

from reslab.models.blocks import BasicBlock, Bottleneck, DropPath, PadShortcut
from reslab.models.config import ArchConfig, ConfigError, DataConfig, ModelConfig, Normalization
from reslab.models.normalize import InputNormalize, channel_stats, default_data_config
from reslab.models.registry import (
    ARCH_OPTIONS,
    ModelSpec,
    UnknownModelError,
    build_model,
    get_model_spec,
    list_models,
)
from reslab.models.resnet import ResNet
from reslab.models.trunk import Backbone

__all__ = [
    "ARCH_OPTIONS",
    "ArchConfig",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "ConfigError",
    "DataConfig",
    "DropPath",
    "InputNormalize",
    "ModelConfig",
    "ModelSpec",
    "Normalization",
    "PadShortcut",
    "ResNet",
    "UnknownModelError",
    "build_model",
    "channel_stats",
    "default_data_config",
    "get_model_spec",
    "list_models",
]
