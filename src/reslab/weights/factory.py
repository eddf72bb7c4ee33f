"""Build models around weights, and the one resolver for model specs.

Every command and the Python API accept the same specs, resolved here by one set of rules:

* ``RUN_DIR`` — a folder written by ``reslab train``/``finetune``: its ``model.safetensors``
  (else its ``checkpoint.safetensors``);
* ``CKPT`` — a reslab checkpoint file;
* ``MODEL@WEIGHTS`` — a registered model with weights: a tag (``reslab weights list``), a
  file, a URL with a checksum or a Keras TF.js folder;
* ``MODEL`` — a registered model with random weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from reslab.layers import LayerSet
from reslab.models import (
    ARCH_OPTIONS,
    ArchConfig,
    InputNormalize,
    ResNet,
    build_model,
    channel_stats,
    get_model_spec,
)
from reslab.runs import RunFolder
from reslab.runs import names as run_names
from reslab.weights.catalog import IMAGENET, find_tag, imagenet_class_names, list_tags
from reslab.weights.checkpoint import (
    checkpoint_model_config,
    is_checkpoint,
    load_checkpoint,
    read_checkpoint_config,
)
from reslab.weights.convert.npm import convert_tfjs_folder_cached
from reslab.weights.convert.tfjs import MODEL_JSON
from reslab.weights.files import WeightsError, read_state_dict
from reslab.weights.load import load_state_dict_into
from reslab.weights.sources import download_weights

__all__ = [
    "create_model",
    "load_weights",
    "resolve_model",
    "resolve_spec_path",
    "weights_file",
]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix in WEIGHT_SUFFIXES


def weights_file(source: str | Path, *, model_name: str | None = None) -> Path:
    """A local weights file for ``source``, downloading or converting it once if needed.

    Args:
        source: a file; a Keras TensorFlow.js folder (``model.json`` + shards); a URL with a
            checksum; or a tag, ``MODEL@TAG`` or a bare ``TAG``.
        model_name: the model the weights are for, so a bare tag (``IMAGENET1K_V1``) resolves.
    """
    text = str(source).strip()
    if "://" in text:
        return download_weights(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / MODEL_JSON).is_file():
            return convert_tfjs_folder_cached(path)
        raise WeightsError(f"{text}: a folder, but not a TensorFlow.js model (no model.json)")
    tag = find_tag(text, model_name)
    if tag is not None:
        return tag.fetch()
    if _looks_like_path(text):
        raise WeightsError(f"{text}: no such weights file")
    if model_name is not None:
        known = ", ".join(t.tag for t in list_tags(model_name))
        if known:
            raise WeightsError(
                f"{text}: not a weights file, URL or tag of {model_name} (its tags: {known})"
            )
    raise WeightsError(f"{text}: not a weights file, URL or known tag (see `reslab weights list`)")


def load_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = True,
    drop_head_if_mismatched: bool = False,
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        model: the model (a reslab ResNet, or any module with torchvision-style keys).
        source: a state dict, a ``.safetensors``/``.pth`` file (read with
            ``weights_only=True``), a reslab checkpoint, a URL with a checksum, a known tag or
            a Keras TF.js folder.
        strict: every key must match (names and shapes); otherwise load what fits.
        drop_head_if_mismatched: keep the model's own ``fc`` when the weights' classifier has
            another number of classes (fine-tuning on a new label set).

    Wrapper prefixes (``module.``, ``_orig_mod.``) are stripped; 3-channel stem weights are
    adapted to the model's ``in_chans`` (summed for one channel, repeated and rescaled for
    more). A mismatch raises :class:`~reslab.weights.StateDictMismatch` listing missing,
    unexpected and wrong-shape keys.
    """
    if isinstance(source, Mapping):
        state_dict, name = dict(source), "state dict"
    else:
        path = weights_file(
            source, model_name=getattr(getattr(model, "config", None), "name", None)
        )
        state_dict, name = read_state_dict(path), str(path)
    return load_state_dict_into(
        model,
        state_dict,
        strict=strict,
        drop_head_if_mismatched=drop_head_if_mismatched,
        source=name,
    )


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    layers: str | LayerSet = "torch",
    pretrained: str | None = None,
    normalize: bool | dict | InputNormalize | None = True,
    **overrides: Any,
) -> ResNet:
    """Build a registered ResNet, optionally with weights.

    Args:
        name: a name from :func:`reslab.list_models`.
        num_classes: classifier outputs (default: the model's, e.g. 1000 or 10).
        in_chans: input channels (default 3, or the channels of reslab-checkpoint
            weights); weights for other channels are adapted to it on load.
        layers: ``"torch"`` (torch.nn) or ``"scratch"`` (reslab.ops) layer set.
        pretrained: weights to load: a file path, URL, Keras TF.js folder or known tag
            (``reslab weights list``). A reslab checkpoint also brings its normalisation,
            options and class names; a ``num_classes`` other than the weights' gets a fresh
            classifier.
        normalize: ``True`` puts the model's fixed input normalisation inside it so it
            takes 0–1 images; ``False`` for raw inputs; or a dict/``InputNormalize``.
        **overrides: any architecture option of :class:`~reslab.models.ResNet`
            (``small_input=True``, ``width=0.5``, ``drop_path_rate=0.1``, ``init="dirac"``…).
    """
    if pretrained is None:
        return build_model(
            name,
            num_classes=num_classes,
            in_chans=3 if in_chans is None else in_chans,
            layers=layers,
            normalize=normalize,
            **overrides,
        )
    return _create_pretrained(
        name,
        str(pretrained),
        num_classes=num_classes,
        in_chans=in_chans,
        layers=layers,
        normalize=normalize,
        **overrides,
    )


def _create_pretrained(
    name: str,
    pretrained: str,
    *,
    num_classes: int | None,
    in_chans: int | None,
    layers: str | LayerSet,
    normalize: Any,
    **overrides: Any,
) -> ResNet:
    """For a reslab checkpoint (a file or a tag) the weights' own settings are the defaults:
    input normalisation, options such as ``small_input``, input channels, classes and class
    names. An explicit ``num_classes`` that differs from the weights' gets a fresh classifier;
    an explicit ``in_chans`` adapts the first conv."""
    path = weights_file(pretrained, model_name=name)
    tag = (
        None
        if Path(pretrained).expanduser().exists() or "://" in pretrained
        else find_tag(pretrained, name)
    )
    data_changes: dict[str, Any] = dict(tag.cfg) if tag else {}
    weights_classes = None
    if is_checkpoint(path):
        saved = checkpoint_model_config(read_checkpoint_config(path), path)
        if saved.name != name:
            raise WeightsError(
                f"{pretrained}: weights of {saved.name}, not {name} "
                f"(use {saved.name}@… or create_model({saved.name!r}, …))"
            )
        overrides = {**_options_beyond_registry(saved.arch, name), **overrides}
        weights_classes = saved.arch.num_classes
        in_chans = saved.arch.in_chans if in_chans is None else in_chans
        if normalize is True:
            normalize = _normalize_for(saved.normalize, in_chans)
        data_changes = {
            "crop_pct": saved.data.crop_pct,
            "interpolation": saved.data.interpolation,
            "class_names": saved.data.class_names,
            "input_size": (in_chans, *saved.data.input_size[1:]),
            "preprocessing": saved.data.preprocessing,
        }
    model = build_model(
        name,
        num_classes=num_classes if num_classes is not None else weights_classes,
        in_chans=3 if in_chans is None else in_chans,
        layers=layers,
        normalize=normalize,
        **overrides,
    )
    load_weights(model, path, drop_head_if_mismatched=num_classes is not None)
    _apply_weights_data_config(model, data_changes)
    model.set_pretrained(tag.key if tag else pretrained)
    return model


def _options_beyond_registry(saved: ArchConfig, name: str) -> dict[str, Any]:
    """The build options of ``saved`` that differ from the registered ``name``'s."""
    spec = get_model_spec(name)
    registered = ArchConfig(**spec.arch).kwargs()
    changed = {
        k: v
        for k, v in saved.kwargs().items()
        if k not in ("num_classes", "in_chans") and registered[k] != v
    }
    fixed = sorted(set(changed) - ARCH_OPTIONS)
    if fixed:
        raise WeightsError(
            f"weights of a {name} with other {', '.join(fixed)}; load the checkpoint"
        )
    return changed


def _normalize_for(saved: Any, in_chans: int) -> dict | bool:
    """The checkpoint's normalisation for ``in_chans`` channels (False: it took raw inputs)."""
    if saved is None:
        return False
    norm = saved.to_dict()
    if len(norm["mean"]) != in_chans:
        norm["mean"] = list(channel_stats(norm["mean"], in_chans))
        norm["std"] = list(channel_stats(norm["std"], in_chans))
        norm["bgr"] = norm["bgr"] and in_chans == 3
    return norm


def _apply_weights_data_config(model: ResNet, changes: dict[str, Any]) -> None:
    changes = {k: v for k, v in changes.items() if v is not None or k == "class_names"}
    if changes.get("class_names") == IMAGENET:
        changes["class_names"] = imagenet_class_names()
    names = changes.get("class_names")
    if names is not None and len(names) != model.num_classes:
        changes["class_names"] = None  # a new head: the old names no longer apply
    model.set_data_config(**changes)


def resolve_spec_path(spec: str) -> Path | None:
    """The checkpoint file a spec names (a run folder's model, or a file), or None for a
    ``MODEL[@WEIGHTS]`` spec. Raises :class:`WeightsError` for a path that does not exist
    or a folder without a model."""
    path = Path(spec).expanduser()
    if path.is_dir():
        model = RunFolder(path).model_file()
        if model is None:
            raise WeightsError(f"{spec}: a folder without {' or '.join(run_names.MODEL_FILES)}")
        return model
    if path.is_file():
        return path
    if "@" not in spec and _looks_like_path(spec):
        raise WeightsError(f"{spec}: no such file or folder")
    return None


def resolve_model(spec: str, *, layers: str | LayerSet | None = None, **kwargs: Any) -> ResNet:
    """Build the model a spec names: ``RUN_DIR``, ``CKPT``, ``MODEL@WEIGHTS`` or ``MODEL``.

    ``layers`` picks the layer set; other ``kwargs`` go to :func:`create_model` (they cannot
    change a checkpoint, which brings its own configuration).
    """
    path = resolve_spec_path(spec)
    if path is not None:
        if kwargs:
            raise ValueError(f"{spec}: a checkpoint brings its own {', '.join(sorted(kwargs))}")
        return load_checkpoint(path, layers=layers if isinstance(layers, str) else None)
    name, _, weights = spec.partition("@")
    return create_model(name, pretrained=weights or None, layers=layers or "torch", **kwargs)
