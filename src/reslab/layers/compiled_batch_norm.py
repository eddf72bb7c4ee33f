"""Training-mode BatchNorm written for TorchInductor's CPU code generator.

Why: inductor's own batch-norm lowering inlines the per-channel arithmetic
(``rsqrt(var / n + eps) * weight``…) into the loop over every activation. On the CPU
the C++ compiler cannot hoist it out of that loop (the loads may alias the stores),
so each row of a channels-last tensor pays a vector square root and two divisions:
the normalising pass of ResNet-20's first stage ran 2.7x slower than the same pass
with the per-channel ``scale`` and ``shift`` read from memory (1.05 ms against 0.39
ms; BENCHMARKS.md, "Batch norm for the compiled path").

Here the statistics come from one pass of sums (of ``x`` less a per-channel pivot),
the per-channel mean, variance, ``scale`` and ``shift`` are computed by a small
registered op (``reslab::bn_stats_to_affine``) that inductor calls as it is instead
of fusing it, and the activation pass is one multiply-add. The backward is written
out (the textbook batch-norm gradient, first order only) with only multiplications
in its per-channel terms, so inductor fuses it into one reduction and one elementwise
pass.

:func:`batch_norm_for_compile` makes the ``nn.BatchNorm2d`` modules of a model
:class:`BatchNorm2dForCompile` for as long as the context lasts (the ``Compile``
callback does so for a fit on the CPU; ResNet-20's compiled training epoch ran 1.086x
faster). The modules keep their parameters, buffers and state-dict keys; evaluation,
``no_grad`` and the uncommon settings go through ``nn.BatchNorm2d.forward``. The
one-pass statistics round differently from torch's Welford reduction; in float32
they would lose precision only if a channel's first value lay some thousand standard
deviations from its mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "BatchNorm2dForCompile",
    "batch_norm_for_compile",
    "restore_batch_norm",
    "train_batch_norm2d",
    "use_compiled_batch_norm",
]

_REDUCE_DIMS = (0, 2, 3)  # every axis but the channels of an N, C, H, W tensor

_LIBRARY = torch.library.Library("reslab", "FRAGMENT")
_LIBRARY.define(
    "bn_stats_to_affine(Tensor pivot, Tensor sum, Tensor sum_sq, Tensor weight, Tensor bias,"
    " SymInt count, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)


def _stats_to_affine(
    pivot: Tensor, sum_: Tensor, sum_sq: Tensor, weight: Tensor, bias: Tensor, count: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Per channel, from the sums of ``x - pivot`` and of its square over ``count`` values:
    the mean, the biased variance, ``scale = weight / sqrt(var + eps)``, ``shift = bias -
    mean * scale`` and ``invstd = 1 / sqrt(var + eps)``."""
    offset = sum_ / count  # mean - pivot
    mean = pivot + offset
    var = (sum_sq / count - offset * offset).clamp_min(0.0)
    invstd = torch.rsqrt(var + eps)
    scale = weight * invstd
    return mean, var, scale, torch.addcmul(bias, mean, scale, value=-1.0), invstd


def _stats_to_affine_shapes(
    pivot: Tensor, sum_: Tensor, sum_sq: Tensor, weight: Tensor, bias: Tensor, count: int,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    return tuple(torch.empty_like(pivot) for _ in range(5))  # type: ignore[return-value]


_LIBRARY.impl("bn_stats_to_affine", _stats_to_affine, "CompositeExplicitAutograd")
torch.library.register_fake("reslab::bn_stats_to_affine", _stats_to_affine_shapes, lib=_LIBRARY)


def _per_channel(t: Tensor) -> Tensor:
    return t.view(1, -1, 1, 1)


def _widened(t: Tensor) -> Tensor:
    """``t`` in float32, or float64 when it is that."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class _TrainBatchNorm2d(torch.autograd.Function):
    """Batch statistics, normalisation and its gradient; float32 arithmetic (float64 for
    float64), output in the input's dtype (bfloat16 under autocast, as torch's)."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        xf = _widened(x)
        # Sums of x - pivot, one pass: the pivot (each channel's first value) keeps the
        # variance's cancellation small; a Welford reduction (torch's) is 1.5-2.5x slower here.
        pivot = xf[0, :, 0, 0]
        centred = xf - _per_channel(pivot)
        mean, var, scale, shift, invstd = torch.ops.reslab.bn_stats_to_affine(
            pivot, centred.sum(_REDUCE_DIMS), (centred * centred).sum(_REDUCE_DIMS),
            weight, bias, x.numel() // x.shape[1], eps,  # (an int: no recompile per batch size)
        )  # fmt: skip
        y = (xf * _per_channel(scale) + _per_channel(shift)).to(x.dtype)
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable  # the backward treats mean and invstd as constants: no double backward
    def backward(
        ctx: Any, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None]:
        x, mean, invstd, weight = ctx.saved_tensors
        g, xf = _widened(grad_y), _widened(x)
        inv_count = 1.0 / (x.numel() // x.shape[1])
        grad_bias = g.sum(_REDUCE_DIMS)
        centred_dot = (g * (xf - _per_channel(mean))).sum(_REDUCE_DIMS)  # sum g * (x - mean)
        # grad_x = a * g + b * x + c per channel (products only: nothing to hoist)
        a = weight * invstd
        b = a * invstd * invstd * centred_dot * -inv_count
        c = a * grad_bias * -inv_count - b * mean
        grad_x = (g * _per_channel(a) + xf * _per_channel(b) + _per_channel(c)).to(x.dtype)
        return grad_x, centred_dot * invstd, grad_bias, None


def train_batch_norm2d(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch norm of ``x`` (N, C, H, W) with batch statistics: returns the
    output and the batch's per-channel mean and biased variance (for the running stats)."""
    return _TrainBatchNorm2d.apply(x, weight, bias, eps)


def _takes_fast_path(bn: nn.BatchNorm2d, x: Tensor) -> bool:
    widened = torch.promote_types(x.dtype, torch.float32)
    return (
        bn.training
        and torch.is_grad_enabled()
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and x.dim() == 4
        and x.numel() > x.shape[1]  # more than one value per channel
        and bn.weight.dtype == widened  # (a model in bf16 throughout: torch's)
        and bn.running_mean is not None
        and bn.running_mean.dtype == widened
    )


class BatchNorm2dForCompile(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that trains through :func:`train_batch_norm2d`; every other case
    (evaluation, ``no_grad``/``inference_mode``, ``momentum=None``, no affine, no running
    statistics, parameters in another dtype than the float32/float64 arithmetic, one value
    per channel) runs ``nn.BatchNorm2d.forward``. Same parameters, buffers and state-dict
    keys; :func:`use_compiled_batch_norm` turns a model's layers into it and back."""

    def forward(self, x: Tensor) -> Tensor:
        if not _takes_fast_path(self, x):
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None and self.momentum is not None
        y, mean, var = train_batch_norm2d(x, self.weight, self.bias, self.eps)
        count = x.numel() // x.shape[1]
        with torch.no_grad():  # as nn.BatchNorm2d: the running variance is the unbiased one
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (count / (count - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        return y


def use_compiled_batch_norm(model: nn.Module) -> list[nn.Module]:
    """Every module of ``model`` whose type is exactly ``nn.BatchNorm2d`` (a subclass may
    override ``forward``: it is left alone) becomes a :class:`BatchNorm2dForCompile` (its
    class is swapped; parameters and buffers stay). Returns the modules changed, for
    :func:`restore_batch_norm`. A copy or a pickle made meanwhile keeps the class, which
    computes what ``nn.BatchNorm2d`` does."""
    changed: list[nn.Module] = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    for bn in changed:
        bn.__class__ = BatchNorm2dForCompile
    return changed


def restore_batch_norm(modules: list[nn.Module]) -> None:
    """Make ``modules`` plain ``nn.BatchNorm2d`` again."""
    for bn in modules:
        if type(bn) is BatchNorm2dForCompile:
            bn.__class__ = nn.BatchNorm2d  # type: ignore[assignment]


@contextmanager
def batch_norm_for_compile(model: nn.Module) -> Iterator[list[nn.Module]]:
    """:func:`use_compiled_batch_norm` for the length of the context."""
    changed = use_compiled_batch_norm(model)
    try:
        yield changed
    finally:
        restore_batch_norm(changed)
