"""Read a TensorFlow.js "layers-model" folder: ``model.json`` plus its binary weight shards.

The format: ``model.json`` holds the Keras topology (``modelTopology``) and a
``weightsManifest``, a list of groups; each group names its shard files (``paths``, read in
order and concatenated) and the tensors packed into them back to back (``weights``: name,
shape, dtype), raw little-endian, no padding.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reslab.weights.files import WeightsError

__all__ = ["MODEL_JSON", "keras_layer_configs", "read_tfjs_model"]

MODEL_JSON = "model.json"  # a TensorFlow.js folder: topology + weights manifest

_DTYPES = {"float32": np.float32, "int32": np.int32}


def read_tfjs_model(folder: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Return ``(tensors by manifest name, model.json's modelTopology)``.

    A shard that is missing, shorter or longer than the manifest says raises
    :class:`WeightsError` naming the problem (truncated download, wrong folder).
    """
    folder = Path(folder)
    spec_path = folder / MODEL_JSON
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise WeightsError(
            f"{folder}: no {MODEL_JSON} (not a TensorFlow.js model folder)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{spec_path}: corrupt {MODEL_JSON} ({err})") from None
    if not isinstance(spec, dict) or "weightsManifest" not in spec:
        raise WeightsError(f"{spec_path}: no weightsManifest (not a TensorFlow.js layers model)")
    tensors: dict[str, Tensor] = {}
    for group in spec["weightsManifest"]:
        data = b"".join(_read_shard(folder, p) for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            name, shape, dtype = entry["name"], list(entry["shape"]), entry["dtype"]
            if "quantization" in entry:
                raise WeightsError(f"{spec_path}: {name} is quantized; only float weights load")
            if dtype not in _DTYPES:
                raise WeightsError(f"{spec_path}: {name} has unsupported dtype {dtype}")
            n = math.prod(shape)
            size = n * np.dtype(_DTYPES[dtype]).itemsize
            if offset + size > len(data):
                raise WeightsError(
                    f"{folder}: weight shards truncated: {len(data)} bytes in "
                    f"{', '.join(group['paths'])} but the manifest needs more (at {name})"
                )
            array = np.frombuffer(
                data, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"), count=n, offset=offset
            )
            tensors[name] = torch.from_numpy(array.astype(_DTYPES[dtype])).reshape(shape)
            offset += size
        if offset != len(data):
            raise WeightsError(
                f"{folder}: weight shards hold {len(data)} bytes but the manifest describes "
                f"{offset}; corrupt or mismatched files"
            )
    return tensors, spec.get("modelTopology") or {}


def _read_shard(folder: Path, name: str) -> bytes:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise WeightsError(f"{folder}: shard path {name!r} points outside the model folder")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{folder}: missing weight shard {name}") from None


def keras_layer_configs(topology: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{layer name: (class name, config)}`` from a Keras functional-model topology."""
    config = topology.get("model_config", topology)
    layers = config.get("config", {}).get("layers", []) if isinstance(config, dict) else []
    return {layer["name"]: (layer["class_name"], layer.get("config", {})) for layer in layers}
