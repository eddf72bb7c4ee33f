"""Crop and resize a whole batch at once, with torchvision's antialiased bilinear filter.

Resizing an image is separable: every output row is a weighted sum of input rows, every output
column a weighted sum of input columns. :func:`axis_weights` builds those weights for a batch
of crops — the ones ``torchvision.transforms.v2.functional.resized_crop(..., antialias=True)``
uses on each crop (PIL's bilinear filter: a triangle one pixel wide, stretched to the scale
when shrinking, renormalised at the crop's edges) — so a batch whose crops all differ is
resampled by two batched matrix products, with no Python loop over images. A horizontal flip
is the column weights read backwards.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["axis_weights", "resize_images", "resized_crops"]


def axis_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, longest: int | None = None
) -> Tensor:
    """``(B, out_size, in_size)`` weights resizing ``[start, start + length)`` of an axis of
    ``in_size`` pixels to ``out_size`` pixels (antialiased bilinear; each row sums to 1)."""
    device = start.device
    start = start.to(torch.float32)
    length = length.to(torch.float32)
    scale = length / out_size  # input pixels per output pixel
    support = scale.clamp(min=1.0)  # the triangle's half-width, in input pixels
    # Input pixels one output pixel reads; ``longest`` (the longest length, known on the host)
    # spares a device-to-host read.
    widest = max(longest / out_size, 1.0) if longest is not None else float(support.max())
    taps = int(math.ceil(2 * widest)) + 1
    centers = start[:, None] + (torch.arange(out_size, device=device) + 0.5) * scale[:, None]
    first = torch.floor(centers - support[:, None] + 0.5)
    pixel = first[:, :, None] + torch.arange(taps, device=device)  # (B, out, taps)
    w = (1.0 - ((pixel + 0.5) - centers[:, :, None]).abs() / support[:, None, None]).clamp(min=0)
    w = w * ((pixel >= start[:, None, None]) & (pixel < (start + length)[:, None, None]))
    w = w / w.sum(-1, keepdim=True)
    index = pixel.to(torch.int64).clamp(0, in_size - 1)  # clamped taps carry weight 0
    dense = torch.zeros(len(start), out_size, in_size, device=device)
    return dense.scatter_add_(2, index, w)


def resized_crops(images: Tensor, boxes: Tensor, size: int, flips: Tensor | None = None) -> Tensor:
    """Crop every image to its box and resize it to ``size`` x ``size``; flip where asked.

    Args:
        images: ``(B, C, H, W)`` of any dtype (uint8 stays on the 0–255 scale).
        boxes: ``(B, 4)`` integer ``(top, left, height, width)`` inside the images.
        size: output side in pixels.
        flips: ``(B,)`` bools, True to mirror that crop left-right.

    Returns float32 ``(B, C, size, size)``: for each image what torchvision's
    ``resized_crop(img, top, left, height, width, [size, size], antialias=True)`` gives on the
    float image (then flipped), up to float rounding.
    """
    b, c, h, w = images.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must be ({b}, 4), got {tuple(boxes.shape)}")
    longest = (
        (int(boxes[:, 2].max()), int(boxes[:, 3].max())) if boxes.device.type == "cpu" else None
    )
    boxes = boxes.to(images.device)
    rows = axis_weights(boxes[:, 0], boxes[:, 2], h, size, longest and longest[0])  # (B, size, H)
    cols = axis_weights(boxes[:, 1], boxes[:, 3], w, size, longest and longest[1])  # (B, size, W)
    if flips is not None:
        flips = flips.to(images.device, torch.bool)
        cols = torch.where(flips[:, None, None], cols.flip(1), cols)
    # Two large batched products: rows over (H, C*W), then columns over (size*C, W).
    x = images.permute(0, 2, 1, 3).reshape(b, h, c * w).to(torch.float32)
    x = torch.bmm(rows, x).view(b, size * c, w)
    x = torch.bmm(x, cols.transpose(1, 2))  # (B, size*C, size)
    return x.view(b, size, c, size).permute(0, 2, 1, 3).contiguous()


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resize whole ``(B, C, H, W)`` images to ``size`` x ``size`` (float32, as
    :func:`resized_crops` with every box the full image)."""
    b, _, h, w = images.shape
    full = torch.tensor([0, 0, h, w], dtype=torch.int64).expand(b, 4)
    return resized_crops(images, full, size)
