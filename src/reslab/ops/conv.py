"""2-D convolution as a strided view (im2col) plus one batched matrix multiply.

The trick: after zero padding, every receptive field of the output already sits
in the input's storage at a fixed stride, so ``as_strided`` can present the
input as a tensor of patches without computing anything::

    x_pad: (N, C, Hp, Wp) with strides (sN, sC, sH, sW)
    view:  (N, G, C/G, kh, kw, H_out, W_out)
    strides (sN, sC*C/G, sC, sH*dil_h, sW*dil_w, sH*stride_h, sW*stride_w)

Moving one step along ``kh`` moves ``dil_h`` rows in the input; moving one step
along ``H_out`` moves ``stride_h`` rows. Neighbouring windows overlap in
memory, which is fine for a read-only view. Reshaping the view to
``(N, G, C/G*kh*kw, H_out*W_out)`` makes the one copy classic im2col makes, and
the convolution is then ``weight.view(G, O/G, C/G*kh*kw) @ cols``.

Autograd differentiates the whole chain; the gradient of the im2col copy is
col2im, which sums the gradients of overlapping windows back into the input
with one strided add per kernel position (see :mod:`reslab.ops.windows`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from reslab.ops.window_args import IntPair, check_window, pair, right_pad
from reslab.ops.windows import Windows, im2col

__all__ = ["conv2d", "conv_output_size", "conv_padding", "same_padding"]


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """``floor((size + pad_total - dilation*(kernel-1) - 1) / stride) + 1``."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, int, int, int]:
    # torch's 'same': total d*(k-1) per axis, the odd pixel goes to the bottom/right.
    (kh, kw), (dh, dw) = kernel, dilation
    th, tw = dh * (kh - 1), dw * (kw - 1)
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)  # top, bottom, left, right


def conv_padding(
    padding: IntPair | str,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` zero padding for conv2d's ``padding`` argument."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError("padding='same' is not supported for strided convolutions")
        return same_padding(kernel, dilation)
    if isinstance(padding, str):
        raise ValueError(f"invalid padding string {padding!r}; expected 'same' or 'valid'")
    ph, pw = pair(padding, "padding")
    if min(ph, pw) < 0:
        raise ValueError("conv2d: negative padding is not supported")
    return (ph, ph, pw, pw)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> Tensor:
    """Cross-correlation with torch.nn.functional.conv2d's semantics.

    Shapes:
        input ``(N, C, H, W)`` (or unbatched ``(C, H, W)``), weight
        ``(O, C/groups, kh, kw)``, bias ``(O,)`` -> ``(N, O, H_out, W_out)`` with
        ``H_out = floor((H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h) + 1``.

    Layout: the zero-padded input is viewed as
    ``(N, G, C/G, kh, kw, H_out, W_out)`` (strides: batch, group = C/G channels,
    channel, ``dil*row``, ``dil*col``, ``stride*row``, ``stride*col``), reshaped
    into the im2col matrix ``(N, G, C/G*kh*kw, H_out*W_out)`` and multiplied by
    the weight viewed as ``(G, O/G, C/G*kh*kw)``. A 1x1 kernel with stride 1 and
    no padding needs no view at all: the input already is that matrix.
    """
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if input.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"conv2d expects a 4-D input and weight, got {tuple(input.shape)} "
            f"and {tuple(weight.shape)}"
        )
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ValueError(
            f"conv2d: input has {c} channels, weight {tuple(weight.shape)} and groups={groups}: "
            "expected C == weight.shape[1] * groups and O divisible by groups"
        )
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},), got {tuple(bias.shape)}")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    if min(sh, sw, dh, dw) < 1:
        raise ValueError("conv2d: stride and dilation must be positive")
    pads = conv_padding(padding, (kh, kw), (sh, sw), (dh, dw))
    top, bottom, left, right = pads
    h_out = conv_output_size(h, kh, sh, top + bottom, dh)
    w_out = conv_output_size(w, kw, sw, left + right, dw)
    check_window(h_out, w_out, h, w)

    g = groups
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and pads == (0, 0, 0, 0):
        # 1x1, stride 1: the input *is* the im2col matrix (a free view if contiguous).
        cols = input.reshape(n, g, cg, h * w)
    else:
        # Pad only as far as the windows reach (floor mode may leave the last rows unused).
        bottom = min(bottom, right_pad(h, h_out, kh, sh, top, dh))
        right = min(right, right_pad(w, w_out, kw, sw, left, dw))
        x = input
        if top or bottom or left or right:
            x = torch.nn.functional.pad(x, (left, right, top, bottom))
        win = Windows((kh, kw), (sh, sw), (dh, dw), (h_out, w_out), groups=g)
        cols = im2col(x, win)  # (N, G, C/G*kh*kw, L): the one copy, as classic im2col
    out = torch.matmul(weight.reshape(g, o // g, cg * kh * kw), cols)  # (N, G, O/G, L)
    out = out.reshape(n, o, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, o, 1, 1)
    return out.squeeze(0) if unbatched else out
