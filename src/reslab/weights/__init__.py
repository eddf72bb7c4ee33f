"""Weights: read/write safely, load by name (torchvision, timm, files, URLs), reslab checkpoints."""

from reslab.weights.adapt import adapt_input_conv
from reslab.weights.checkpoint import (
    is_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from reslab.weights.io import WeightsError, read_state_dict
from reslab.weights.load import StateDictMismatch, check_state_dict, load_weights

__all__ = [
    "StateDictMismatch",
    "WeightsError",
    "adapt_input_conv",
    "check_state_dict",
    "is_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_config",
    "read_state_dict",
    "save_checkpoint",
]
