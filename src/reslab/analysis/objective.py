"""The objective the weight-space analyses share: the mean cross-entropy of a model in eval mode
on given images (0–1) and integer labels, computed in batches so memory stays bounded, and a
context that puts a model in eval mode and gives every module its own mode back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BATCH_SIZE", "check_images", "eval_mode", "image_batches", "loss_and_accuracy"]

BATCH_SIZE = 250  # images per forward pass (memory stays bounded whatever the subset's size)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the ``with``, ``model`` is in eval mode; afterwards each module has the
    ``training`` flag it had before (a model may mix modes, e.g. frozen BatchNorms)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def check_images(images: Tensor, labels: Tensor) -> None:
    """One-line errors for inputs the analyses cannot use."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float (N, C, H, W) tensor, got {tuple(images.shape)}")
    if labels.shape != (len(images),) or labels.is_floating_point():
        raise ValueError(f"labels must be {len(images)} integers, got {tuple(labels.shape)}")
    if len(images) == 0:
        raise ValueError("no images")


def image_batches(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = BATCH_SIZE
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches on the model's device, ``x`` in its parameters' dtype."""
    param = next(model.parameters())
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(param.device, param.dtype)
        yield x, labels[start : start + batch_size].to(param.device)


def _forward(model: nn.Module, params: Mapping[str, Tensor] | None, x: Tensor) -> Tensor:
    if params is None:
        return model(x)
    return torch.func.functional_call(model, dict(params), (x,), strict=False)


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    params: Mapping[str, Tensor] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> tuple[float, float]:
    """The mean cross-entropy and the accuracy of ``model`` (in its current mode) on the
    images, with ``params`` (name → tensor) standing in for those parameters when given;
    the model itself is not changed."""
    total_loss, correct = 0.0, 0
    for x, y in image_batches(model, images, labels, batch_size):
        logits = _forward(model, params, x)
        total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return total_loss / len(images), correct / len(images)
