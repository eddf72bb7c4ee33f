"""Augmentation: whole-batch ops for in-memory small images, per-sample ops for image folders.

Every random choice comes from an explicit ``torch.Generator`` so a run is reproducible from
its seed, and a resumed run draws exactly what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EvalTransform",
    "Presized",
    "TrainTransform",
    "crop_flip_params",
    "draw_crop_box",
    "eval_transform_from_cfg",
    "presize_image",
    "random_crop_flip",
]


def crop_flip_params(n: int, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Draw ``(n, 3)`` int64 parameters: x offset, y offset (0..2*pad) and a flip bit."""
    params = torch.randint(0, 2 * pad + 1, (n, 3), generator=generator)
    params[:, 2] = torch.randint(0, 2, (n,), generator=generator) if flip else 0
    return params


def random_crop_flip(images: Tensor, params: Tensor, pad: int) -> Tensor:
    """Pad by ``pad`` (zeros), crop back to size at per-image offsets, flip where asked.

    One gather for the whole batch, no Python loop over images. ``images`` is ``(B, C, H, W)``
    of any dtype; ``params`` comes from :func:`crop_flip_params` (on any device).
    """
    b, c, h, w = images.shape
    params = params.to(images.device)
    if pad > 0:
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dx, dy, flip = params[:, 0], params[:, 1], params[:, 2].bool()
    cols = torch.arange(w, device=images.device)
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], w - 1 - cols[None, :], cols[None, :]) + dx[:, None]
    rows = torch.arange(h, device=images.device)[None, :] + dy[:, None]
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return images[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    modes = {
        "bilinear": InterpolationMode.BILINEAR,
        "bicubic": InterpolationMode.BICUBIC,
        "nearest": InterpolationMode.NEAREST,
    }
    if name not in modes:
        raise ValueError(f"unknown interpolation {name!r}; expected one of {sorted(modes)}")
    return modes[name]


class EvalTransform:
    """Resize the short side to ``size / crop_pct``, then centre-crop ``size`` (timm's eval).

    Args:
        size: output side in pixels.
        crop_pct: fraction of the resized image kept by the crop (1.0: resize straight to size).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
    """

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = "bilinear") -> None:
        self.size = int(size)
        self.crop_pct = float(crop_pct)
        self.interpolation = _interp(interpolation)

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        from torchvision.transforms.v2 import functional as F

        scale = int(math.floor(self.size / self.crop_pct))
        img = F.resize(img, [scale], interpolation=self.interpolation, antialias=True)
        return F.center_crop(img, [self.size, self.size])


class TrainTransform:
    """Random resized crop (Inception-style area/aspect jitter) plus a horizontal flip.

    Args:
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image.
        ratio: range of the crop's aspect ratio.
        interpolation: resampling used to resize the crop.
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = (0.35, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
    ) -> None:
        self.size = int(size)
        self.scale = tuple(scale)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.interpolation = _interp(interpolation)

    def draw(self, h: int, w: int, g: torch.Generator) -> tuple[tuple[int, int, int, int], bool]:
        """This sample's ``(top, left, height, width)`` crop of an ``h`` x ``w`` image and its
        flip, drawn from ``g`` (what :meth:`__call__` applies; batch loaders draw the same)."""
        box = draw_crop_box(h, w, self.scale, self.log_ratio, g)
        return box, _rand(g) < 0.5

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        from torchvision.transforms.v2 import functional as F

        g = generator if generator is not None else torch.Generator().manual_seed(0)
        (top, left, ch, cw), flip = self.draw(img.shape[-2], img.shape[-1], g)
        img = F.resized_crop(
            img, top, left, ch, cw, [self.size, self.size], self.interpolation, antialias=True
        )
        return img.flip(-1) if flip else img


def draw_crop_box(
    h: int,
    w: int,
    scale: Sequence[float],
    log_ratio: Sequence[float],
    g: torch.Generator,
) -> tuple[int, int, int, int]:
    """An Inception-style crop ``(top, left, height, width)`` of an ``h`` x ``w`` image: area a
    uniform fraction ``scale`` of the image's, log aspect ratio uniform in ``log_ratio``; up to
    10 tries, then the central square."""
    area = h * w
    for _ in range(10):
        target = area * (scale[0] + (scale[1] - scale[0]) * _rand(g))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * _rand(g))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    side = min(h, w)  # fallback: the central square
    return (h - side) // 2, (w - side) // 2, side, side


def presize_image(img: Tensor, size: int) -> Tensor:
    """Resize the short side to ``size`` (bilinear, antialiased) and centre-crop a square:
    ``(C, size, size)``, same dtype. fastai's ``Resize(size)`` "presizing" step, with the crop
    always central (fastai moves it at random in training)."""
    from torchvision.transforms.v2 import functional as F

    if tuple(img.shape[-2:]) == (size, size):
        return img
    if min(img.shape[-2:]) != size:
        img = F.resize(img, [size], interpolation=_interp("bilinear"), antialias=True)
    return F.center_crop(img, [size, size])


class Presized:
    """``transform`` applied to the image presized to ``presize`` x ``presize``
    (:func:`presize_image`): the decode-every-epoch twin of a decoded-folder loader.

    Args:
        presize: the square side images are brought to first.
        transform: ``transform(img, generator)``, e.g. a :class:`TrainTransform`.
    """

    def __init__(self, presize: int, transform: EvalTransform | TrainTransform) -> None:
        self.presize = int(presize)
        self.transform = transform

    def __call__(self, img: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.transform(presize_image(img, self.presize), generator)


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def eval_transform_from_cfg(cfg: dict, size: int | None = None) -> EvalTransform:
    """The eval transform a model's ``default_cfg`` asks for (input size, crop, resampling)."""
    size = size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return EvalTransform(size, cfg.get("crop_pct", 0.875), cfg.get("interpolation", "bilinear"))
