"""The element-wise and reshaping ops: ``linear``, ``relu``, ``flatten``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["flatten", "linear", "relu"]


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``: ``(*, in) x (out, in) -> (*, out)``.

    The transposed weight is a strided view (strides swapped), not a copy; a
    2-D input with a bias becomes one fused ``addmm``.
    """
    if input.dim() == 2 and bias is not None:
        return torch.addmm(bias, input, weight.t())
    out = torch.matmul(input, weight.t())
    return out if bias is None else out + bias


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(x, 0)`` element-wise; any shape.

    Computed as "zero where ``x <= 0``": NaN stays NaN, ``-inf`` becomes 0, and the
    gradient passes where ``x > 0`` only (it is 0 at ``x == 0``, as for torch's relu;
    ``clamp_min``'s gradient at the boundary differs between torch releases).
    ``inplace=True`` zeroes the input in place.
    """
    if inplace:
        return input.masked_fill_(input <= 0, 0)
    return input.masked_fill(input <= 0, 0)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one, like ``torch.flatten``.

    ``(N, C, 1, 1)`` with ``start_dim=1`` -> ``(N, C)``: a view when the
    strides allow it (a ``reshape``), else a copy.
    """
    if input.dim() == 0:
        return input.reshape(1)
    nd = input.dim()
    start = start_dim + nd if start_dim < 0 else start_dim
    end = end_dim + nd if end_dim < 0 else end_dim
    if not (0 <= start < nd and 0 <= end < nd):
        raise IndexError(f"flatten: dims ({start_dim}, {end_dim}) out of range for {nd}-D input")
    if start > end:
        raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
    if start == end:
        return input
    shape = input.shape
    return input.reshape(*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
