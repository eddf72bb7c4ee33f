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
from reslab.weights.sources import cache_dir, download_url, fetch_source
from reslab.weights.tags import WeightTag, find_tag, list_tags

__all__ = [
    "StateDictMismatch",
    "WeightTag",
    "WeightsError",
    "adapt_input_conv",
    "cache_dir",
    "check_state_dict",
    "download_url",
    "fetch_source",
    "find_tag",
    "is_checkpoint",
    "list_tags",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_config",
    "read_state_dict",
    "save_checkpoint",
]
