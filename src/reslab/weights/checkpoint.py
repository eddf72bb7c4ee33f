"""reslab checkpoints: one safetensors file holding the weights and the JSON config.

The config (model name, build options, data config, class names, anything the caller adds)
sits in the safetensors header, so the model is rebuilt from the file alone and nothing is
ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reslab.models import ResNet
from reslab.models.registry import rebuild_model
from reslab.weights.io import WeightsError, atomic_write, read_safetensors_metadata

__all__ = [
    "CONFIG_KEY",
    "is_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
    "save_checkpoint",
]

CONFIG_KEY = "reslab"


def save_checkpoint(path: str | Path, model: ResNet, **state: Any) -> Path:
    """Write ``model``'s weights and config (plus JSON-able ``state``) atomically to ``path``."""
    from safetensors.torch import save_file

    build = getattr(model, "build_config", None)
    if build is None:
        raise ValueError("save_checkpoint needs a model built by reslab.create_model")
    config = {
        "format": 1,
        "build": build,
        "layers": model.layer_set.name,
        "default_cfg": _jsonable(model.default_cfg),
        "num_classes": model.num_classes,
        "state": _jsonable(state),
    }
    # The classifier may have been replaced since the model was built.
    config["build"] = {**build, "num_classes": model.num_classes}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata={CONFIG_KEY: json.dumps(config)})
    )
    return path


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The JSON config stored in a reslab checkpoint."""
    meta = read_safetensors_metadata(path)
    if CONFIG_KEY not in meta:
        raise WeightsError(f"{path}: a safetensors file, but not a reslab checkpoint (no config)")
    return json.loads(meta[CONFIG_KEY])


def is_checkpoint(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        return CONFIG_KEY in read_safetensors_metadata(path)
    except WeightsError:
        return False


def load_checkpoint(path: str | Path, *, layers: str | None = None) -> ResNet:
    """Rebuild the model stored in a reslab checkpoint and load its weights.

    The caller's extra state is available as ``model.checkpoint_state``.
    """
    from reslab.weights.io import read_state_dict
    from reslab.weights.load import check_state_dict

    config = read_checkpoint_config(path)
    model = rebuild_model(config["build"], layers=layers or config.get("layers", "torch"))
    state_dict = read_state_dict(path)
    check_state_dict(model, state_dict, str(path))
    model.load_state_dict(state_dict)
    cfg = config.get("default_cfg", {})
    model.default_cfg = {**model.default_cfg, **cfg}
    model.checkpoint_state = config.get("state", {})
    return model


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
