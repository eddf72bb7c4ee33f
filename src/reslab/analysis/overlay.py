"""Drawing class activation maps: an image with its heat map over it, as pixels or on axes.

Shared by the explain figures, the top-losses grid and the HTML report. Figures are
``matplotlib.figure.Figure`` objects (no pyplot: no global backend or figure state) and are
written atomically through :func:`reslab.files.atomic_write`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor

from reslab.files import atomic_write

__all__ = ["figure_png", "heat_overlay", "image_array", "save_figure", "show_image", "show_map"]


def image_array(image: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` 0–1 image as an ``(H, W, 3)`` float array (grey repeated, clamped)."""
    if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"expected an image of shape (C, H, W) with 1 or 3 channels, got {tuple(image.shape)}"
        )
    pixels = image.detach().float().cpu().clamp(0, 1)[:3].permute(1, 2, 0).numpy()
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def heat_overlay(
    image: Tensor, cam: Tensor, *, alpha: float = 0.45, cmap: str = "jet"
) -> np.ndarray:
    """The image with ``cam`` (``(H, W)`` in [0, 1]) blended over it: ``(H, W, 3)`` uint8."""
    from matplotlib import colormaps

    base = image_array(image)
    if tuple(cam.shape) != base.shape[:2]:
        raise ValueError(f"map of shape {tuple(cam.shape)} for an image of size {base.shape[:2]}")
    heat = colormaps[cmap](cam.detach().float().cpu().clamp(0, 1).numpy())[..., :3]
    blended = (1 - alpha) * base + alpha * heat
    return (blended * 255).round().astype(np.uint8)


def show_image(ax, image: Tensor) -> None:
    """Draw a 0–1 ``(C, H, W)`` image on matplotlib axes (one channel in grey)."""
    pixels = image.detach().float().cpu().clamp(0, 1)
    if pixels.shape[0] == 1:
        ax.imshow(pixels[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(pixels[:3].permute(1, 2, 0).numpy())
    ax.axis("off")


def show_map(ax, image: Tensor, cam: Tensor, *, alpha: float = 0.45, cmap: str = "jet") -> None:
    """Draw the image with its class map over it."""
    show_image(ax, image)
    ax.imshow(cam.detach().float().cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)


def save_figure(fig, path: str | Path, *, dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG, atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def figure_png(fig, *, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()
