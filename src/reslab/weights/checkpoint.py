"""reslab checkpoints: one safetensors file holding the weights and the model's config.

The config (:class:`~reslab.models.ModelConfig` as JSON, the layer set, anything the caller
adds) sits in the safetensors header, so the model is rebuilt from the file alone and nothing
is ever unpickled. A header is input from outside: it is validated, and the model it describes
is checked against the file's tensor shapes on the meta device before any memory is allocated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from reslab.files import to_jsonable
from reslab.models import (
    ConfigError,
    DataConfig,
    ModelConfig,
    ResNet,
    UnknownModelError,
    build_model,
)
from reslab.models.config import BLOCK_NAMES
from reslab.weights.files import (
    WeightsError,
    read_safetensors_metadata,
    read_safetensors_shapes,
    read_state_dict,
    write_safetensors,
)
from reslab.weights.load import check_shapes

__all__ = [
    "CONFIG_KEY",
    "checkpoint_model_config",
    "is_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

CONFIG_KEY = "reslab"
FORMAT = 2
LAYER_SETS = ("torch", "scratch")


def save_checkpoint(path: str | Path, model: ResNet, **state: Any) -> Path:
    """Write ``model``'s weights and config (plus JSON-able ``state``) atomically to ``path``."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError(f"save_checkpoint needs a reslab ResNet, got {type(model).__name__}")
    if config.arch.block not in BLOCK_NAMES:
        raise ValueError(
            f"a model with the custom block {config.arch.block} cannot be rebuilt from a file"
        )
    header = {
        "format": FORMAT,
        "model": config.to_dict(),
        "layers": model.layer_set.name,
        "state": to_jsonable(state),
    }
    return write_safetensors(path, model.state_dict(), {CONFIG_KEY: json.dumps(header)})


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The JSON header of a reslab checkpoint (:class:`WeightsError` if it is not one)."""
    meta = read_safetensors_metadata(path)
    if CONFIG_KEY not in meta:
        raise WeightsError(
            f"{path}: a safetensors file, but not a reslab checkpoint (no config); "
            "load plain weights with MODEL@FILE or reslab.load_weights"
        )
    try:
        header = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: damaged checkpoint header ({err})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: damaged checkpoint header (not a JSON object)")
    return header


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a readable reslab checkpoint."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        read_checkpoint_config(path)
    except WeightsError:
        return False
    return True


def checkpoint_model_config(header: dict[str, Any], path: str | Path = "") -> ModelConfig:
    """The validated :class:`ModelConfig` of a checkpoint header (either format)."""
    try:
        if header.get("format") == 1:
            return _config_from_format_1(header)
        if header.get("format") != FORMAT:
            raise ConfigError(f"unknown checkpoint format {header.get('format')!r}")
        if "model" not in header:
            raise ConfigError("no model config in the header")
        return ModelConfig.from_dict(header["model"])
    except (ConfigError, UnknownModelError, TypeError, KeyError, ValueError) as err:
        raise WeightsError(f"{path}: invalid checkpoint config: {_reason(err)}") from None


def load_checkpoint(path: str | Path, *, layers: str | None = None) -> ResNet:
    """Rebuild the model stored in a reslab checkpoint and load its weights.

    Args:
        path: a file written by :func:`save_checkpoint`.
        layers: build on this layer set (default: the one it was saved from).

    The caller's extra state is available as ``model.checkpoint_state``.
    """
    header = read_checkpoint_config(path)
    config = checkpoint_model_config(header, path)
    layer_set = layers or header.get("layers", "torch")
    if layer_set not in LAYER_SETS:
        raise WeightsError(f"{path}: unknown layer set {layer_set!r}")
    with torch.device("meta"):
        skeleton = ResNet.from_config(config, layer_set)
    check_shapes(skeleton, read_safetensors_shapes(path), str(path))
    model = ResNet.from_config(config, layer_set)
    model.load_state_dict(read_state_dict(path))
    state = header.get("state", {})
    # A plain attribute (nn.Module's __setattr__ is typed for tensors and modules only).
    vars(model)["checkpoint_state"] = state if isinstance(state, dict) else {}
    return model


def _reason(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip("'\"")


def _config_from_format_1(header: dict[str, Any]) -> ModelConfig:
    """Checkpoints written before the typed config: registry name + options + a cfg dict."""
    build = header["build"]
    if not isinstance(build, dict):
        raise ConfigError("'build' must be a JSON object")
    options = build.get("overrides", {})
    normalize = build.get("normalize")
    with torch.device("meta"):
        model = build_model(
            build["name"],
            num_classes=build["num_classes"],
            in_chans=build["in_chans"],
            normalize=normalize if normalize else False,
            **options,
        )
    saved = header.get("default_cfg", {})
    fields = model.config.data.to_dict()
    fields.update({k: saved[k] for k in ("input_size", "crop_pct", "interpolation") if k in saved})
    names = saved.get("class_names")
    if names is not None and len(names) == model.num_classes:  # else: names of a replaced head
        fields["class_names"] = names
    if saved.get("preprocessing"):
        fields["preprocessing"] = saved["preprocessing"]
    return model.config.replace(data=DataConfig(**fields), pretrained=saved.get("pretrained"))
