"""Convert the Keras ImageNet ResNet-50 (TensorFlow.js layers format) into ``resnet50_v1``, exactly.

What differs between Keras' ResNet and reslab's, and how each is represented without
approximation:

* Keras' ResNet50 is v1: a downsampling bottleneck strides on its first 1x1 conv
  (``resnet50_v1``, not torchvision's v1.5).
* Its convs carry biases; every conv is followed by a BatchNorm, so the bias is folded into the
  BN's running mean: ``BN(conv(x) + b) = BN'(conv(x))`` with ``mean' = mean - b``.
* Its BatchNorm epsilon is 1e-3 (read per layer from the topology); reslab's is torch's 1e-5.
  ``sqrt(var + 1e-3) = sqrt((var + 1e-3 - 1e-5) + 1e-5)``, so the variance is shifted.
* Conv kernels are HWIO (permuted to OIHW), the dense kernel is (in, out) (transposed).
* Inputs are "caffe" style (RGB→BGR, 0–255, minus the BGR mean, no std): that is the model's
  built-in :class:`~reslab.models.InputNormalize`, so the converted model takes 0–1 RGB images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from reslab.models import ResNet, build_model
from reslab.models.normalize import CAFFE_BGR_MEAN
from reslab.weights.checkpoint import save_checkpoint
from reslab.weights.convert.tfjs import keras_layer_configs, read_tfjs_model
from reslab.weights.files import WeightsError
from reslab.weights.load import check_state_dict

__all__ = [
    "CAFFE_NORMALIZE",
    "convert_keras_resnet",
    "convert_tfjs_folder",
    "keras_model_from_tfjs",
]
CAFFE_NORMALIZE = {
    "mean": list(CAFFE_BGR_MEAN),
    "std": [1.0, 1.0, 1.0],
    "scale": 255.0,
    "bgr": True,
}
TORCH_BN_EPS = 1e-5
# Used when no topology gives the epsilon: Keras 2.2's ResNet50 kept BatchNormalization's
# default 1e-3; keras.applications >= 2.3 (conv2_block1_1_bn names) builds with 1.001e-5.
KERAS_BN_EPS = 1e-3
KERAS_APPS_BN_EPS = 1.001e-5
_V1_DEPTHS = {
    (3, 4, 6, 3): "resnet50_v1",
    (3, 4, 23, 3): "resnet101_v1",
    (3, 8, 36, 3): "resnet152_v1",
}

# Keras 2.2 names (res2a_branch2a / bn2a_branch2a) and keras.applications >= 2.3 names
# (conv2_block1_1_conv / conv2_block1_1_bn); both describe the same v1 bottleneck.
_OLD = re.compile(r"^(res|bn)(\d)([a-z])_branch(1|2a|2b|2c)$")
_NEW = re.compile(r"^conv(\d)_block(\d+)_(\d)_(conv|bn)$")
_OLD_PART = {"1": "downsample", "2a": "1", "2b": "2", "2c": "3"}
_NEW_PART = {"0": "downsample", "1": "1", "2": "2", "3": "3"}


def _layer_target(layer: str) -> tuple[str, str, tuple[int, int]] | None:
    """``(kind, reslab module, (stage, block))`` of a Keras layer name; kind is conv/bn/fc."""
    if layer in ("conv1", "conv1_conv"):
        return "conv", "conv1", (1, 0)
    if layer in ("bn_conv1", "conv1_bn"):
        return "bn", "bn1", (1, 0)
    if layer in ("fc1000", "predictions"):
        return "fc", "fc", (6, 0)
    m = _OLD.match(layer)
    if m:
        kind = "conv" if m.group(1) == "res" else "bn"
        stage, block, part = int(m.group(2)), ord(m.group(3)) - ord("a"), _OLD_PART[m.group(4)]
    else:
        m = _NEW.match(layer)
        if not m:
            return None
        kind = m.group(4)
        stage, block, part = int(m.group(1)), int(m.group(2)) - 1, _NEW_PART[m.group(3)]
    prefix = f"layer{stage - 1}.{block}."
    if part == "downsample":
        module = prefix + ("downsample.0" if kind == "conv" else "downsample.1")
    else:
        module = prefix + f"{kind}{part}"
    return kind, module, (stage, block)


def _group_by_layer(tensors: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    layers: dict[str, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        # TF.js names are "layer/variable" (sometimes with a ":0" suffix or a scope prefix).
        parts = name.split(":")[0].split("/")
        if len(parts) < 2:
            raise WeightsError(f"unexpected Keras weight name {name!r} (expected LAYER/VARIABLE)")
        layers.setdefault(parts[-2], {})[parts[-1]] = value
    return layers


def convert_keras_resnet(
    tensors: dict[str, Tensor], topology: dict | None = None
) -> tuple[str, dict[str, Tensor]]:
    """Map Keras ResNet v1 weights to ``(reslab model name, state dict)``.

    Args:
        tensors: ``{"res2a_branch2a/kernel": …, "bn2a_branch2a/moving_mean": …, …}``.
        topology: model.json's ``modelTopology``; supplies each BN's epsilon and lets the
            v1 layout (stride on the first 1x1) be checked. Without it, epsilon is 1e-3
            for Keras 2.2 names and 1.001e-5 for keras.applications >= 2.3 names.
    """
    configs = keras_layer_configs(topology or {})
    layers = _group_by_layer(tensors)
    found = {name: _layer_target(name) for name in layers}
    unknown = sorted(name for name, t in found.items() if t is None)
    if unknown:
        raise WeightsError(f"not a Keras ResNet: unexpected layers {', '.join(unknown[:6])}")
    targets = {name: t for name, t in found.items() if t is not None}
    _check_v1(configs)
    conv_bias: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}
    for name, (kind, module, _) in targets.items():
        w = layers[name]
        if kind == "conv":
            state[f"{module}.weight"] = w["kernel"].permute(3, 2, 0, 1).contiguous()
            if "bias" in w:
                conv_bias[module] = w["bias"]
        elif kind == "fc":
            state["fc.weight"] = w["kernel"].t().contiguous()
            state["fc.bias"] = w["bias"].clone()
    for name, (kind, module, _) in targets.items():
        if kind != "bn":
            continue
        w = layers[name]
        default_eps = KERAS_APPS_BN_EPS if name.startswith("conv") else KERAS_BN_EPS
        eps = float(configs.get(name, ("", {}))[1].get("epsilon", default_eps))
        conv = _conv_of_bn(module)
        mean = w["moving_mean"].double()
        var = w["moving_variance"].double() + (eps - TORCH_BN_EPS)
        if conv in conv_bias:
            mean = mean - conv_bias[conv].double()
        if bool((var < 0).any()):
            raise WeightsError(f"{name}: epsilon {eps} < 1e-5 cannot be represented exactly")
        n = mean.numel()
        state[f"{module}.weight"] = w.get("gamma", torch.ones(n)).float().clone()
        state[f"{module}.bias"] = w.get("beta", torch.zeros(n)).float().clone()
        state[f"{module}.running_mean"] = mean.float()
        state[f"{module}.running_var"] = var.float()
        state[f"{module}.num_batches_tracked"] = torch.tensor(0)
    missing_bn = sorted(c for c in conv_bias if f"{_bn_of_conv(c)}.running_mean" not in state)
    if missing_bn:
        raise WeightsError(f"conv bias without a following BatchNorm: {', '.join(missing_bn)}")
    return _model_name(targets), state


def _conv_of_bn(module: str) -> str:
    if module == "bn1":
        return "conv1"
    if module.endswith("downsample.1"):
        return module[: -len("1")] + "0"
    return re.sub(r"bn(\d)$", r"conv\1", module)


def _bn_of_conv(module: str) -> str:
    if module == "conv1":
        return "bn1"
    if module.endswith("downsample.0"):
        return module[: -len("0")] + "1"
    return re.sub(r"conv(\d)$", r"bn\1", module)


def _check_v1(configs: dict[str, tuple[str, dict]]) -> None:
    """With a topology at hand, make sure the downsampling stride sits on the first 1x1."""
    for first, second in (
        ("res3a_branch2a", "res3a_branch2b"),
        ("conv3_block1_1_conv", "conv3_block1_2_conv"),
    ):
        if first in configs:
            s1 = tuple(configs[first][1].get("strides", (1, 1)))
            s2 = tuple(configs[second][1].get("strides", (1, 1))) if second in configs else (1, 1)
            if s1 != (2, 2) or s2 != (1, 1):
                raise WeightsError(
                    f"Keras model strides {first} by {s1} and {second} by {s2}; only ResNet v1 "
                    "(stride 2 on the first 1x1 conv) converts exactly"
                )


def _model_name(targets: dict) -> str:
    blocks: dict[int, set[int]] = {}
    for _kind, _, (stage, block) in targets.values():
        if 2 <= stage <= 5:
            blocks.setdefault(stage, set()).add(block)
    depths = tuple(len(blocks.get(s, ())) for s in (2, 3, 4, 5))
    if depths not in _V1_DEPTHS:
        raise WeightsError(f"Keras ResNet with {depths} blocks per stage is not ResNet-50/101/152")
    return _V1_DEPTHS[depths]


def keras_model_from_tfjs(folder: str | Path, class_names: Sequence[str] | None = None) -> ResNet:
    """Build the reslab model of a Keras ResNet TF.js folder, weights loaded, caffe inputs."""
    tensors, topology = read_tfjs_model(folder)
    name, state = convert_keras_resnet(tensors, topology)
    num_classes = state["fc.weight"].shape[0] if "fc.weight" in state else 0
    model = build_model(name, num_classes=num_classes, normalize=dict(CAFFE_NORMALIZE))
    check_state_dict(model, state, str(folder))
    model.load_state_dict(state)
    if class_names is not None and len(class_names) != num_classes:
        raise WeightsError(f"{len(class_names)} class names for {num_classes} classes")
    model.set_data_config(
        class_names=tuple(class_names) if class_names else None,
        preprocessing="caffe (BGR, 0-255, mean subtracted) inside the model",
    )
    return model


def labels_file_beside(folder: Path) -> Path:
    """Where the npm package keeps the class names of the model in ``folder``."""
    return folder.parent / "assets" / "labels.json"


def _labels_beside(folder: Path) -> list[str] | None:
    """The npm package's ``assets/labels.json`` (``{"0": "tench", …}``), if next to the model."""
    path = labels_file_beside(folder)
    if not path.is_file():
        return None
    labels = json.loads(path.read_text())
    if isinstance(labels, dict):
        labels = [labels[str(i)] for i in range(len(labels))]
    # "Egyptian_cat" → "Egyptian cat", as in torchvision's ImageNet names.
    return [str(n).replace("_", " ") for n in labels]


def convert_tfjs_folder(
    folder: str | Path,
    out: str | Path,
    class_names: Sequence[str] | None = None,
    *,
    source: str | None = None,
) -> Path:
    """Convert a Keras ResNet TF.js folder into a reslab checkpoint at ``out`` (atomic write)."""
    folder = Path(folder)
    names = class_names if class_names is not None else _labels_beside(folder)
    model = keras_model_from_tfjs(folder, names)
    return save_checkpoint(
        out, model, source=source or str(folder), converted_from="keras tfjs layers-model"
    )
