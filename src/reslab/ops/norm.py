"""Batch normalisation from means, a square and a fused multiply-add."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_norm2d"]


def batch_norm2d(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch norm with torch.nn.functional.batch_norm's exact semantics.

    Shapes: input ``(N, C, H, W)`` (any ``(N, C, *)`` works), every other
    tensor ``(C,)`` -> ``(N, C, H, W)``.

    Training: per channel, ``mean`` and the *biased* variance ``mean((x-mean)^2)``
    over ``N, H, W`` normalise the batch; if running buffers are given they are
    updated **in place**: ``r = (1-momentum)*r + momentum*stat``, with the
    *unbiased* variance (times ``n/(n-1)``) going into ``running_var``.
    (``num_batches_tracked`` and ``momentum=None`` belong to the module.)
    Evaluation: the running buffers normalise; ``y = x*scale + shift`` with
    ``scale = weight/sqrt(running_var + eps)``, ``shift = bias - running_mean*scale``.

    Only the centred input is kept for the backward pass: ``y = addcmul(bias,
    x - mean, weight * rsqrt(var + eps))``.
    """
    if input.dim() < 2:
        raise ValueError(f"batch_norm2d expects (N, C, ...), got {tuple(input.shape)}")
    c = input.shape[1]
    shape = (1, c) + (1,) * (input.dim() - 2)
    for name, t in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ):
        if t is not None and t.numel() != c:
            raise ValueError(f"batch_norm2d: {name} has {t.numel()} elements, expected {c}")
    if training:
        dims = [0, *range(2, input.dim())]
        count = input.numel() // c if c else 0
        if count <= 1:
            raise ValueError(
                "Expected more than 1 value per channel when training, "
                f"got input size {tuple(input.shape)}"
            )
        mean = input.mean(dim=dims, keepdim=True)
        centred = input - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)  # biased: normalises the batch
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(
                        mean.reshape(c).to(running_mean.dtype), alpha=momentum
                    )
                if running_var is not None:
                    unbiased = var.reshape(c) * (count / (count - 1))
                    running_var.mul_(1 - momentum).add_(
                        unbiased.to(running_var.dtype), alpha=momentum
                    )
        scale = torch.rsqrt(var + eps)
        x = centred
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm2d: running_mean and running_var are needed in eval mode")
        scale = torch.rsqrt(running_var.view(shape) + eps)
        x = input
        if weight is not None:
            scale = scale * weight.view(shape)
        # Fold the running mean into the shift: y = x*scale + (bias - mean*scale).
        shift = -running_mean.view(shape) * scale
        if bias is not None:
            shift = shift + bias.view(shape)
        return torch.addcmul(shift, x, scale)
    if weight is not None:
        scale = scale * weight.view(shape)
    if bias is None:
        return x * scale
    return torch.addcmul(bias.view(shape), x, scale)
