"""Calibration images for static int8 quantisation: real images, given explicitly, never noise.

Static quantisation fixes each activation's int8 range from the values seen on calibration
images; ranges learnt on anything but the data the model is for (random noise above all) cost
accuracy that no speed number shows. So the int8 engines take the images as an argument and
refuse an empty set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from reslab.data.datasets import ImageDataset

__all__ = ["CalibrationError", "calibration_batches", "calibration_images"]


class CalibrationError(ValueError):
    """Calibration images are missing or unusable; the message says what to pass."""


def _as_images(item: object) -> Tensor:
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], Tensor):
        item = item[0]  # a loader's (images, labels)
    if not isinstance(item, Tensor) or item.dim() != 4:
        raise CalibrationError(
            "calibration data must be image batches (N, C, H, W) in 0-1, got "
            f"{type(item).__name__}{tuple(item.shape) if isinstance(item, Tensor) else ''}"
        )
    if item.dtype == torch.uint8:
        return item.float().div_(255)
    return item.float()


def calibration_batches(
    calib: Tensor | Iterable | None, engine: str = "int8", batch_size: int = 16
) -> list[Tensor]:
    """``calib`` as a list of float batches of at most ``batch_size`` images.

    Args:
        calib: a tensor ``(N, C, H, W)`` (float in 0–1, or uint8 0–255), or an iterable of
            such batches or of ``(images, labels)`` pairs.
        engine: the engine's name, for the error message.
        batch_size: the largest batch returned.

    Raises:
        CalibrationError: no images at all, or something that is not an image batch.
    """
    items = [] if calib is None else [calib] if isinstance(calib, Tensor) else list(calib)
    batches = [b for item in items for b in _as_images(item).split(batch_size) if len(b)]
    if not batches:
        raise CalibrationError(
            f"engine {engine!r} needs calibration images of the data the model is for "
            "(e.g. --calib DATA --calib-images 128); got none"
        )
    return batches


def calibration_images(
    dataset: ImageDataset,
    count: int,
    *,
    model_cfg: Mapping[str, Any] | None = None,
    seed: int = 0,
    skip: int = 0,
) -> Tensor:
    """``count`` images drawn at random (by ``seed``) from ``dataset``, as the model sees them.

    Image folders get the model's eval resize/centre-crop (``model_cfg``); in-memory data sets
    are used as they are. Returns float ``(count, C, H, W)`` in 0–1 (fewer if the data set is
    smaller).

    Args:
        dataset: from :func:`reslab.data.load_dataset` (use its training split: calibrating
            on the images one evaluates on flatters the result).
        count: how many images; must be positive.
        model_cfg: the model's ``default_cfg`` (input size, crop, interpolation).
        seed: which images are drawn.
        skip: leave out the first ``skip`` images of the seeded order: with the same seed,
            ``skip=N`` gives images disjoint from a draw of ``N`` (e.g. held-out images to
            check a model calibrated on the first ``N``).
    """
    from reslab.data import make_loader

    if count < 1:
        raise CalibrationError(f"calibration needs at least one image, got {count}")
    if len(dataset) <= skip:
        raise CalibrationError(
            "the calibration data set has no images"
            if skip == 0
            else f"the data set has {len(dataset)} images, none left after {skip}"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    subset = dataset.subset(order[skip : skip + count].sort().values)
    loader = make_loader(subset, 32, train=False, model_cfg=model_cfg, workers=0)
    return torch.cat([x for x, _ in loader])
