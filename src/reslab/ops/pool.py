"""Pooling as a strided window view plus a reduction (``max``, ``sum``, ``mean``).

A pooling layer is a convolution without weights: the same ``as_strided``
window view as :func:`reslab.ops.conv2d`, but laid out as
``(N, C, H_out, W_out, kh, kw)`` with strides
``(sN, sC, sH*stride_h, sW*stride_w, sH*dil_h, sW*dil_w)`` and reduced over
its last two axes instead of multiplied with a weight.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reslab.ops.window_args import IntPair, check_window, pair, right_pad, window_out_size
from reslab.ops.windows import Windows, im2col

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "max_pool2d"]


def _geometry(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
    name: str,
) -> tuple[tuple[int, int], ...]:
    k = pair(kernel_size, "kernel_size")
    s = pair(stride, "stride") if stride is not None and stride != [] else k
    p = pair(padding, "padding")
    d = pair(dilation, "dilation")
    if min(*k, *s, *d) < 1 or min(p) < 0:
        raise ValueError(f"{name}: kernel, stride and dilation must be positive, padding >= 0")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"{name}: padding should be at most half of the kernel size, got {p}")
    h, w = input.shape[-2:]
    out = (
        window_out_size(h, k[0], s[0], p[0], d[0], ceil_mode),
        window_out_size(w, k[1], s[1], p[1], d[1], ceil_mode),
    )
    check_window(out[0], out[1], h, w)
    extra = (
        right_pad(h, out[0], k[0], s[0], p[0], d[0]),
        right_pad(w, out[1], k[1], s[1], p[1], d[1]),
    )
    return k, s, p, d, out, extra


def _as_batched(input: Tensor, name: str) -> tuple[Tensor, bool]:
    if input.dim() == 3:
        return input.unsqueeze(0), True
    if input.dim() != 4:
        raise ValueError(f"{name} expects (N, C, H, W) or (C, H, W), got {tuple(input.shape)}")
    return input, False


def max_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max over each window, with torch.nn.functional.max_pool2d's semantics.

    Shapes: ``(N, C, H, W) -> (N, C, H_out, W_out)``; ``stride`` defaults to the
    kernel; ``H_out`` follows torch's formula, including ``ceil_mode``.

    Layout: the input is padded with ``-inf`` (so padding never wins the max;
    in ceil mode the right side gets enough extra ``-inf`` for the last
    window), viewed as ``(N, C, H_out, W_out, kh, kw)``, copied to
    ``(..., kh*kw)`` and reduced with ``max``, whose index picks the first
    maximum in row-major window order, as torch does; the gradient flows to
    that one element only. ``return_indices`` gives torch's flat ``h*W + w``
    input positions.
    """
    x, unbatched = _as_batched(input, "max_pool2d")
    if not x.is_floating_point():
        raise TypeError("max_pool2d: only floating point inputs are supported")
    k, s, p, d, out, extra = _geometry(
        x, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d"
    )
    if p[0] or p[1] or extra[0] or extra[1]:
        x = torch.nn.functional.pad(x, (p[1], extra[1], p[0], extra[0]), value=-math.inf)
    cols = im2col(x, Windows(k, s, d, out, layout="pool"))  # (N, C, H_out, W_out, kh*kw), one copy
    values, arg = cols.max(dim=-1)
    if unbatched:
        values = values.squeeze(0)
    if not return_indices:
        return values
    # Window-local argmax (i, j) -> input position (oh*s - p + i*d, ow*s - p + j*d).
    width = input.shape[-1]
    oh = torch.arange(out[0], device=arg.device).view(-1, 1) * s[0] - p[0]
    ow = torch.arange(out[1], device=arg.device).view(1, -1) * s[1] - p[1]
    rows = oh + torch.div(arg, k[1], rounding_mode="floor") * d[0]
    cols = ow + (arg % k[1]) * d[1]
    indices = rows * width + cols
    return values, indices.squeeze(0) if unbatched else indices


def _avg_divisor(
    size: int, out: int, kernel: int, stride: int, pad: int, include_pad: bool
) -> list:
    """Per-position window counts along one axis, as torch's CPU/CUDA kernels count them.

    A window ``[start, start + k)`` (``start = o*stride - pad``) is first
    clipped to the padded input ``[-pad, size + pad)``; ``count_include_pad``
    divides by that length, otherwise by its overlap with ``[0, size)``.
    """
    counts = []
    for o in range(out):
        start = o * stride - pad
        end = min(start + kernel, size + pad)
        counts.append(end - start if include_pad else min(end, size) - max(start, 0))
    return counts


def avg_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Mean over each window, with torch.nn.functional.avg_pool2d's semantics.

    Shapes: ``(N, C, H, W) -> (N, C, H_out, W_out)``.

    Layout: zero-pad, view as ``(N, C, H_out, W_out, kh, kw)`` and ``sum`` the
    last two axes; then divide by the window size. Zero padding adds nothing
    to a sum, so only the divisor depends on ``count_include_pad``: the number
    of real pixels in the window (``False``, the ResNet-D shortcut), or the
    window clipped to the padded input (``True``; the extra right padding of
    ceil mode is never counted). The divisor is separable, ``rows x cols``.
    """
    x, unbatched = _as_batched(input, "avg_pool2d")
    k, s, p, d, out, extra = _geometry(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    if p[0] or p[1] or extra[0] or extra[1]:
        x = torch.nn.functional.pad(x, (p[1], extra[1], p[0], extra[0]))
    sums = Windows(k, s, d, out, layout="pool").view(x).sum(dim=(-2, -1))
    if divisor_override is not None:
        if divisor_override == 0:
            raise ValueError("avg_pool2d: divisor_override must not be zero")
        result = sums / divisor_override
    else:
        h, w = input.shape[-2:]
        rows = _avg_divisor(h, out[0], k[0], s[0], p[0], count_include_pad)
        cols = _avg_divisor(w, out[1], k[1], s[1], p[1], count_include_pad)
        if len(set(rows)) == 1 and len(set(cols)) == 1:
            result = sums / (rows[0] * cols[0])
        else:
            divisor = torch.tensor(rows, dtype=sums.dtype, device=sums.device).view(-1, 1) * (
                torch.tensor(cols, dtype=sums.dtype, device=sums.device).view(1, -1)
            )
            result = sums / divisor
    return result.squeeze(0) if unbatched else result


def _adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    # torch's bins: [floor(i*size/out), ceil((i+1)*size/out)).
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_avg_pool2d(input: Tensor, output_size: int | None | tuple) -> Tensor:
    """Average over an ``output_size`` grid of bins, like torch's adaptive_avg_pool2d.

    Shapes: ``(N, C, H, W) -> (N, C, out_h, out_w)`` (``None`` keeps a size).

    ``1x1`` (the ResNet head) is a plain ``mean`` over ``H, W``. When the bins
    tile the input evenly it is the window view with ``kernel = stride =
    H/out_h``; otherwise bins overlap and vary in size, and each output axis is
    a weighted sum with a ``(out, size)`` averaging matrix.
    """
    x, unbatched = _as_batched(input, "adaptive_avg_pool2d")
    h, w = x.shape[-2:]
    if output_size is None or isinstance(output_size, int):
        output_size = (output_size, output_size)
    oh, ow = (
        h if output_size[0] is None else output_size[0],
        w if output_size[1] is None else output_size[1],
    )
    if oh < 1 or ow < 1:
        raise ValueError(f"adaptive_avg_pool2d: output size must be positive, got {(oh, ow)}")
    if (oh, ow) == (1, 1):
        result = x.mean(dim=(-2, -1), keepdim=True)
    elif h % oh == 0 and w % ow == 0:
        k = (h // oh, w // ow)
        result = Windows(k, k, (1, 1), (oh, ow), layout="pool").view(x).mean(dim=(-2, -1))
    else:

        def averaging(size: int, out: int) -> Tensor:
            m = torch.zeros(out, size, dtype=x.dtype, device=x.device)
            for i, (a, b) in enumerate(_adaptive_bins(size, out)):
                m[i, a:b] = 1.0 / (b - a)
            return m

        result = torch.einsum("nchw,ih,jw->ncij", x, averaging(h, oh), averaging(w, ow))
    return result.squeeze(0) if unbatched else result
