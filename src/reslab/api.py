"""The top-level entry points that join the rooms: build a model, then load its weights."""

from __future__ import annotations

from typing import Any

from reslab.layers import LayerSet
from reslab.models import InputNormalize, ResNet, build_model

__all__ = ["create_model", "resolve_model"]


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
        pretrained: weights to load: a file path, URL or known tag (``reslab weights
            list``). A reslab checkpoint also brings its normalisation, options and class
            names; a ``num_classes`` other than the weights' gets a fresh classifier.
        normalize: ``True`` puts the model's fixed input normalisation inside it so it
            takes 0–1 images; ``False`` for raw inputs; or a dict/``InputNormalize``.
        **overrides: any :class:`~reslab.models.ResNet` argument (``small_input=True``,
            ``width=0.5``, ``drop_path_rate=0.1``, ``shortcut="conv"``, …).
    """
    if pretrained is not None:
        from reslab.weights.tags import create_pretrained

        return create_pretrained(
            name,
            str(pretrained),
            num_classes=num_classes,
            in_chans=in_chans,
            layers=layers,
            normalize=normalize,
            **overrides,
        )
    return build_model(
        name,
        num_classes=num_classes,
        in_chans=3 if in_chans is None else in_chans,
        layers=layers,
        normalize=normalize,
        **overrides,
    )


def resolve_model(spec: str, **kwargs: Any) -> ResNet:
    """Build a model from a command-line spec.

    ``spec`` is a reslab checkpoint file, ``MODEL@WEIGHTS`` (a registered name and a weights
    tag, file or URL) or a bare ``MODEL`` (random weights). ``kwargs`` go to :func:`create_model`.
    """
    from pathlib import Path

    from reslab.weights import is_checkpoint, load_checkpoint

    if Path(spec).is_file() and is_checkpoint(spec):
        return load_checkpoint(spec)
    if Path(spec).exists():
        raise ValueError(f"{spec}: not a reslab checkpoint (expected a .safetensors from reslab)")
    name, _, weights = spec.partition("@")
    return create_model(name, pretrained=weights or None, **kwargs)
