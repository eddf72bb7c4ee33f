"""Sharpness as numbers: the top eigenvalues and the trace of the Hessian of the loss.

The Hessian of the mean cross-entropy (eval mode, the given images) with respect to the
model's trainable parameters is never formed: a Hessian-vector product ``Hv`` is the gradient
of ``g·v`` (``g`` the gradient, kept in the graph), summed over batches weighted by their
size. The top eigenvalues come from power iteration on ``Hv`` with deflation (each new vector
kept orthogonal to the eigenvectors already found), the trace from Hutchinson's estimator
``E[vᵀHv]`` over Rademacher vectors ``v`` — the measures PyHessian (Yao et al. 2020) reports.
``torch.autograd.grad`` is used throughout, so ``.grad`` of the parameters is not touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reslab.analysis.objective import check_images, eval_mode, image_batches

__all__ = [
    "HVP_BATCH_SIZE",
    "TraceEstimate",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "power_iteration",
]

HVP_BATCH_SIZE = 125  # images per double-backward pass (it keeps the whole graph)
POWER_ITERATIONS = 100  # at most, per eigenvalue
POWER_TOLERANCE = 1e-3  # stop when the eigenvalue changes by less, relatively (as PyHessian)
TRACE_SAMPLES = 20  # Rademacher vectors for Hutchinson's estimator

Vector = list[Tensor]


def _params(model: nn.Module) -> list[Tensor]:
    params: list[Tensor] = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def _hvp(model, params, images, labels, vector, batch_size) -> Vector:
    out = [torch.zeros_like(p) for p in params]
    for x, y in image_batches(model, images, labels, batch_size):
        loss = F.cross_entropy(model(x), y) * (len(y) / len(images))
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs = [(g, v) for g, v in zip(grads, vector) if g is not None]
        if not pairs:
            continue
        inner = sum((g * v).sum() for g, v in pairs)
        used = [p for p, g in zip(params, grads) if g is not None]
        hv = iter(torch.autograd.grad(inner, used, allow_unused=True))
        for i, g in enumerate(grads):
            if g is not None:
                h = next(hv)
                if h is not None:
                    out[i] += h.detach()
    return out


def hessian_vector_product(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    vector: Sequence[Tensor],
    *,
    batch_size: int = HVP_BATCH_SIZE,
) -> Vector:
    """``H·vector`` for the mean cross-entropy of ``model`` in eval mode on the images;
    ``vector`` has one tensor per trainable parameter (``model.parameters()`` order)."""
    check_images(images, labels)
    params = _params(model)
    if len(vector) != len(params) or any(v.shape != p.shape for v, p in zip(vector, params)):
        raise ValueError("vector must have one tensor per trainable parameter, same shapes")
    with eval_mode(model):
        return _hvp(model, params, images, labels, list(vector), batch_size)


def _normalized(v: Vector) -> Vector:
    norm = math.sqrt(_dot(v, v))
    return [x / max(norm, 1e-30) for x in v]


def _orthogonal(v: Vector, basis: list[Vector]) -> Vector:
    for u in basis:
        c = _dot(v, u)
        v = [x - c * y for x, y in zip(v, u)]
    return v


def power_iteration(
    matvec: Callable[[Vector], Vector],
    like: Sequence[Tensor],
    k: int = 1,
    *,
    iterations: int = POWER_ITERATIONS,
    tol: float = POWER_TOLERANCE,
    seed: int = 0,
) -> tuple[list[float], list[Vector]]:
    """The ``k`` eigenvalues of largest magnitude of the symmetric operator ``matvec`` (on
    lists of tensors shaped as ``like``), largest first, and their unit eigenvectors. Each
    is found by power iteration, kept orthogonal to those already found (deflation)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    generator = torch.Generator().manual_seed(seed)
    values: list[float] = []
    vectors: list[Vector] = []
    for _ in range(k):
        v = [torch.randn(t.shape, generator=generator).to(t.device, t.dtype) for t in like]
        v = _normalized(_orthogonal(v, vectors))
        value = None
        for _ in range(iterations):
            hv = _orthogonal(matvec(v), vectors)
            new = _dot(v, hv)
            v = _normalized(hv)
            if value is not None and abs(new - value) <= tol * (abs(value) + 1e-12):
                value = new
                break
            value = new
        values.append(float(value if value is not None else 0.0))
        vectors.append(v)
    order = sorted(range(k), key=lambda i: -abs(values[i]))
    return [values[i] for i in order], [vectors[i] for i in order]


def hessian_eigenvalues(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    k: int = 1,
    *,
    iterations: int = POWER_ITERATIONS,
    tol: float = POWER_TOLERANCE,
    seed: int = 0,
    batch_size: int = HVP_BATCH_SIZE,
) -> list[float]:
    """The ``k`` Hessian eigenvalues of largest magnitude (largest first; at a trained
    minimum the top ones are positive) of the mean cross-entropy of ``model`` in eval mode
    on ``images`` (0–1) and ``labels``. The model is left as it was."""
    check_images(images, labels)
    params = _params(model)
    with eval_mode(model):
        matvec = lambda v: _hvp(model, params, images, labels, v, batch_size)  # noqa: E731
        values, _ = power_iteration(matvec, params, k, iterations=iterations, tol=tol, seed=seed)
    return values


@dataclass
class TraceEstimate:
    """Hutchinson's estimate of ``tr(H)``: the mean of ``vᵀHv`` over ``samples`` Rademacher
    vectors, and the standard error of that mean."""

    value: float
    stderr: float
    samples: int


def hessian_trace(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    samples: int = TRACE_SAMPLES,
    seed: int = 0,
    batch_size: int = HVP_BATCH_SIZE,
) -> TraceEstimate:
    """The trace of the Hessian (as :func:`hessian_eigenvalues`) by Hutchinson's estimator."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    check_images(images, labels)
    params = _params(model)
    generator = torch.Generator().manual_seed(seed)
    draws = []
    with eval_mode(model):
        for _ in range(samples):
            v = [
                (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p.device, p.dtype)
                for p in params
            ]
            draws.append(_dot(v, _hvp(model, params, images, labels, v, batch_size)))
    mean = sum(draws) / samples
    var = sum((d - mean) ** 2 for d in draws) / (samples - 1) if samples > 1 else 0.0
    return TraceEstimate(mean, math.sqrt(var / samples), samples)
