"""Deletion and insertion curves: is a relevance map faithful to the model?

Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models"
(BMVC 2018). Rank an image's pixels by a map, most relevant first, then

- **deletion**: replace them, a few at a time, by a baseline image (the image blurred, or
  its mean colour) and follow the class probability: a faithful map makes it fall fast
  (a *low* area under the curve);
- **insertion**: start from the baseline and put the original pixels back in the same
  order: a faithful map makes the probability rise fast (a *high* area).

A pixel is one spatial position: all its channels are replaced together. With ``P``
pixels and ``S`` steps, step ``i`` (``0..S``) has the first ``k_i = floor(i * P / S)``
pixels of the order changed, so the curve has ``S + 1`` points at the fractions
``k_i / P``, from 0 to 1; ties in a map keep the pixels' row-major order. The area is the
trapezoid rule over those fractions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reslab.analysis.gradcam import eval_mode

__all__ = [
    "BASELINES",
    "BLUR_SIGMA",
    "baseline_images",
    "curve_auc",
    "gaussian_blur",
    "perturbation_curves",
    "pixel_order",
    "random_maps",
    "step_counts",
]

BASELINES = ("blur", "mean")
# Standard deviation of the "blur" baseline's Gaussian, as a fraction of the image's
# shorter side (pixels per pixel of side): 11 px at 224 px, 1.6 px at 32 px, 1.4 px at 28 px.
# Enough to remove the detail a class needs, not the colours and layout.
BLUR_SIGMA = 0.05
CURVES = ("deletion", "insertion")


def step_counts(num_pixels: int, steps: int) -> list[int]:
    """How many pixels are changed at each of the ``steps + 1`` points of a curve:
    ``floor(i * num_pixels / steps)`` for ``i = 0..steps`` (0 first, every pixel last)."""
    if num_pixels < 1:
        raise ValueError(f"an image needs at least one pixel, got {num_pixels}")
    if not 1 <= steps <= num_pixels:
        raise ValueError(f"steps must be between 1 and the {num_pixels} pixels, got {steps}")
    return [i * num_pixels // steps for i in range(steps + 1)]


def pixel_order(maps: Tensor) -> Tensor:
    """``(N, H*W)`` pixel indices (row-major) of each ``(H, W)`` map, most relevant first;
    equal values keep their row-major order."""
    if maps.dim() != 3:
        raise ValueError(f"expected maps of shape (N, H, W), got {tuple(maps.shape)}")
    return torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices


def random_maps(
    n: int, height: int, width: int, seed: int = 0, *, grid: tuple[int, int] | None = None
) -> Tensor:
    """``(n, height, width)`` maps of independent uniform noise: the baseline a method must
    beat (a random pixel order). With ``grid`` ``(h, w)``, the noise is drawn on that grid
    and upsampled bilinearly, as Grad-CAM upsamples a layer's map: random blobs of
    Grad-CAM's size instead of scattered pixels."""
    g = torch.Generator().manual_seed(seed)
    if grid is None:
        return torch.rand(n, height, width, generator=g)
    coarse = torch.rand(n, 1, *grid, generator=g)
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """``images`` (N, C, H, W) blurred by a Gaussian of standard deviation ``sigma`` pixels
    (separable, truncated at 3 sigma, edges replicated)."""
    if sigma <= 0:
        return images.clone()
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def baseline_images(images: Tensor, kind: str = "blur") -> Tensor:
    """What removed pixels become: ``"blur"``, the image blurred (:data:`BLUR_SIGMA`), or
    ``"mean"``, every pixel the image's own mean colour."""
    if kind == "blur":
        return gaussian_blur(images, BLUR_SIGMA * min(images.shape[-2:]))
    if kind == "mean":
        return images.mean((2, 3), keepdim=True).expand_as(images).clone()
    raise ValueError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")


@torch.no_grad()
def perturbation_curves(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    *,
    kind: str = "deletion",
    steps: int = 20,
    baseline: str | Tensor = "blur",
    batch_size: int = 64,
) -> Tensor:
    """``(N, steps + 1)``: the softmax probability of each image's ``target`` class as its
    pixels are deleted (or inserted) in the order of its map.

    Args:
        model: a classifier returning logits; run in eval mode, left as it was.
        images: ``(N, C, H, W)``, as the model takes them.
        maps: ``(N, H, W)`` relevance maps, the most relevant pixel the largest.
        target: ``(N,)`` class per image.
        kind: ``"deletion"`` or ``"insertion"``.
        steps: points of the curve after the first (see :func:`step_counts`).
        baseline: ``"blur"``, ``"mean"`` or an image tensor of ``images``' shape.
        batch_size: perturbed images per forward pass (bounds memory only).
    """
    if kind not in CURVES:
        raise ValueError(f"unknown curve {kind!r}; expected deletion or insertion")
    n, _, h, w = images.shape
    if maps.shape != (n, h, w):
        raise ValueError(f"expected maps of shape {(n, h, w)}, got {tuple(maps.shape)}")
    fill = baseline_images(images, baseline) if isinstance(baseline, str) else baseline
    counts = torch.tensor(step_counts(h * w, steps), device=images.device)
    # rank[p]: the position of pixel p in the order; a pixel is changed at step i when
    # its rank is below k_i.
    rank = torch.argsort(pixel_order(maps.to(images.device)), dim=1)
    per_batch = max(1, batch_size // (steps + 1))
    curves = []
    with eval_mode(model):
        for start in range(0, n, per_batch):
            sl = slice(start, start + per_batch)
            changed = (rank[sl, None, :] < counts[None, :, None]).view(-1, steps + 1, 1, h, w)
            x, b = images[sl, None], fill[sl, None]
            mixed = torch.where(changed, b, x) if kind == "deletion" else torch.where(changed, x, b)
            probs = model(mixed.flatten(0, 1)).float().softmax(-1)
            t = target[sl].to(probs.device).repeat_interleave(steps + 1)
            curves.append(probs.gather(1, t[:, None]).view(-1, steps + 1))
    return torch.cat(curves).cpu()


def curve_auc(fractions: Tensor | list[float], values: Tensor) -> Tensor:
    """The area under each curve (rows of ``values``) over ``fractions``, by the trapezoid
    rule: ``sum_i (f_{i+1} - f_i) * (v_i + v_{i+1}) / 2``."""
    f = torch.as_tensor(fractions, dtype=torch.float64)
    v = values.to(torch.float64)
    if v.shape[-1] != f.numel():
        raise ValueError(f"{f.numel()} fractions for curves of {v.shape[-1]} points")
    return ((f[1:] - f[:-1]) * (v[..., 1:] + v[..., :-1]) / 2).sum(-1)
