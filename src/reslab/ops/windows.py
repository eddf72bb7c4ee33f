"""Sliding windows as an ``as_strided`` view: im2col and its adjoint, col2im.

A :class:`Windows` describes the windows of a convolution or a pooling layer
over an already padded ``(N, C, H, W)`` tensor and builds two kinds of view
from the tensor's own strides ``(sN, sC, sH, sW)``:

* :meth:`Windows.view`, every window at once (overlapping in memory);
  ``"conv"`` layout ``(N, G, C/G, kh, kw, H_out, W_out)`` with strides
  ``(sN, sC*C/G, sC, sH*dil_h, sW*dil_w, sH*stride_h, sW*stride_w)``, or
  ``"pool"`` layout ``(N, C, H_out, W_out, kh, kw)``;
* :meth:`Windows.tap`, one kernel position ``(i, j)`` across all windows: the
  same strides without the kernel axes, starting ``i*dil_h*sH + j*dil_w*sW``
  further into storage. A tap never overlaps itself.

:func:`im2col` copies the window view into a contiguous matrix (the one copy
classic im2col makes). Its backward pass is col2im: one zero tensor and
``kh*kw`` in-place adds, ``tap(grad_input, i, j) += grad_cols[..., i, j]``.
Autograd's generic backward for an overlapping ``as_strided`` view computes
the same sum with an index scatter over every element, which measured 1.5-2x
slower per layer on the CPU; the pair below keeps everything a strided view and
stays differentiable to any order (each is the other's backward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Windows", "col2im", "im2col"]


@dataclass(frozen=True)
class Windows:
    """Window geometry over a padded ``(N, C, H, W)`` tensor (see the module docstring)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    out: tuple[int, int]
    groups: int = 1
    layout: str = "conv"  # "conv": (N, G, C/G, kh, kw, Ho, Wo); "pool": (N, C, Ho, Wo, kh, kw)

    def _base(self, t: Tensor) -> tuple[list[int], list[int], list[int], list[int]]:
        n, c = t.shape[:2]
        s_n, s_c, s_h, s_w = t.stride()
        (kh, kw), (ho, wo), g = self.kernel, self.out, self.groups
        win_size = [ho, wo]
        win_stride = [s_h * self.stride[0], s_w * self.stride[1]]
        kern_size = [kh, kw]
        kern_stride = [s_h * self.dilation[0], s_w * self.dilation[1]]
        if self.layout == "conv":
            lead_size, lead_stride = [n, g, c // g], [s_n, s_c * (c // g), s_c]
        else:
            lead_size, lead_stride = [n, c], [s_n, s_c]
        return lead_size + win_size, lead_stride + win_stride, kern_size, kern_stride

    def view(self, t: Tensor) -> Tensor:
        """All windows of ``t`` at once, without copying."""
        lead, lead_stride, kern, kern_stride = self._base(t)
        if self.layout == "conv":  # kernel axes before the output positions
            size = lead[:3] + kern + lead[3:]
            stride = lead_stride[:3] + kern_stride + lead_stride[3:]
        else:
            size, stride = lead + kern, lead_stride + kern_stride
        # No offset argument: the view starts where ``t`` starts (its own storage offset).
        return t.as_strided(size, stride)

    def tap(self, t: Tensor, i: int, j: int) -> Tensor:
        """Kernel position ``(i, j)`` of every window: ``(N, [G, C/G | C], H_out, W_out)``.

        Selecting ``(i, j)`` on the kernel axes of :meth:`view` drops those axes and moves the
        start ``i*dil_h*sH + j*dil_w*sW`` elements further into storage.
        """
        windows = self.view(t)
        return windows[:, :, :, i, j] if self.layout == "conv" else windows[..., i, j]

    def cols_shape(self, shape: torch.Size) -> tuple[int, ...]:
        n, c = shape[:2]
        (kh, kw), (ho, wo), g = self.kernel, self.out, self.groups
        if self.layout == "conv":
            return (n, g, c // g * kh * kw, ho * wo)
        return (n, c, ho, wo, kh * kw)

    def view_shape(self, shape: torch.Size) -> tuple[int, ...]:
        n, c = shape[:2]
        (kh, kw), (ho, wo), g = self.kernel, self.out, self.groups
        if self.layout == "conv":
            return (n, g, c // g, kh, kw, ho, wo)
        return (n, c, ho, wo, kh, kw)


class _Im2col(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, win: Windows) -> Tensor:
        ctx.win, ctx.shape = win, x.shape
        cols = win.view(x).clone(memory_format=torch.contiguous_format)
        return cols.view(win.cols_shape(x.shape))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return col2im(grad, ctx.win, ctx.shape), None


class _Col2im(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cols: Tensor, win: Windows, shape: torch.Size) -> Tensor:
        ctx.win = win
        out = cols.new_zeros(shape)
        taps = cols.reshape(win.view_shape(shape))
        for i in range(win.kernel[0]):
            for j in range(win.kernel[1]):
                tap = taps[:, :, :, i, j] if win.layout == "conv" else taps[..., i, j]
                win.tap(out, i, j).add_(tap)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return im2col(grad, ctx.win), None, None


def im2col(x: Tensor, win: Windows) -> Tensor:
    """Copy every window of ``x`` into a contiguous matrix of shape ``win.cols_shape``."""
    return _Im2col.apply(x, win)


def col2im(cols: Tensor, win: Windows, shape: torch.Size) -> Tensor:
    """Sum each window's entries back into place: the adjoint (and gradient) of im2col."""
    return _Col2im.apply(cols, win, shape)
