"""Weights: a one-way chain from files to models.

``files`` (read/write state dicts safely) → ``sources`` (local paths, checked URL downloads)
→ ``catalog`` (the table of named tags) → ``load`` (fit tensors into a model) →
``checkpoint`` (reslab's self-describing files) → ``convert`` (Keras TF.js) → ``factory``
(build a model around weights; the one resolver for ``RUN_DIR``/``CKPT``/``MODEL@TAG``).
"""

from reslab.weights.adapt import adapt_input_conv
from reslab.weights.catalog import WeightTag, find_tag, imagenet_class_names, list_tags
from reslab.weights.checkpoint import (
    is_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from reslab.weights.factory import (
    create_model,
    load_weights,
    resolve_model,
    resolve_spec_path,
    weights_file,
)
from reslab.weights.files import WeightsError, read_state_dict, write_safetensors
from reslab.weights.load import StateDictMismatch, check_state_dict
from reslab.weights.sources import download_weights, weights_dir

__all__ = [
    "StateDictMismatch",
    "WeightTag",
    "WeightsError",
    "adapt_input_conv",
    "check_state_dict",
    "create_model",
    "download_weights",
    "find_tag",
    "imagenet_class_names",
    "is_checkpoint",
    "list_tags",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint_config",
    "read_state_dict",
    "resolve_model",
    "resolve_spec_path",
    "save_checkpoint",
    "weights_dir",
    "weights_file",
    "write_safetensors",
]
