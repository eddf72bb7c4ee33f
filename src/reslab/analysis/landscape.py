"""Loss landscapes (Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018).

The loss is evaluated at ``w + a·d1`` (1-D) or ``w + a·d1 + b·d2`` (2-D) for a grid of
``a`` (and ``b``) in ``[-span, span]``, where ``w`` are the trained weights and ``d1``, ``d2``
random Gaussian directions, **filter-normalised**: every filter of a direction (a slice along
the first axis of a conv or linear weight: one output channel or unit) is rescaled to the norm
of the same filter of ``w``, so a step of 1 moves every filter by its own size and networks of
different scales are comparable. BatchNorm parameters and biases (tensors of one dimension)
get a zero direction, as in the paper. The objective is the mean cross-entropy in eval mode on
the given images; the model is never modified (the perturbed weights are passed to
:func:`torch.func.functional_call`), and its modes and gradients are left as they were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reslab.analysis.objective import BATCH_SIZE, check_images, eval_mode, loss_and_accuracy

__all__ = [
    "NORMALIZATION",
    "Landscape",
    "filter_normalized_direction",
    "grid",
    "loss_landscape",
    "random_directions",
]

NORMALIZATION = "filter"  # how directions are scaled (recorded in landscape.json)
NORMALIZATION_TEXT = (
    "random Gaussian directions; each filter (slice along the first axis of a conv or linear "
    "weight) rescaled to the norm of the same filter of the weights; BatchNorm parameters and "
    "biases (1-D tensors) get a zero direction (Li et al. 2018)"
)


@dataclass
class Landscape:
    """A loss landscape. 1-D: ``loss[i]`` at ``alphas[i]``. 2-D: ``loss[i][j]`` at
    ``alphas[i]`` along the first direction and ``betas[j]`` along the second; ``accuracy``
    likewise. ``seed`` drew the directions; ``images`` counts the images evaluated."""

    dims: int
    alphas: list[float]
    betas: list[float] | None
    loss: list[Any]
    accuracy: list[Any]
    seed: int
    images: int
    normalization: str = NORMALIZATION

    def origin(self) -> tuple[float, float]:
        """Loss and accuracy at the weights themselves (the grid's centre, which must be on
        the grid: an odd number of steps)."""
        i = self.alphas.index(0.0)
        if self.dims == 1:
            return self.loss[i], self.accuracy[i]
        j = (self.betas or []).index(0.0)
        return self.loss[i][j], self.accuracy[i][j]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "normalization_text": NORMALIZATION_TEXT}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Landscape:
        keys = ("dims", "alphas", "betas", "loss", "accuracy", "seed", "images", "normalization")
        return cls(**{k: data[k] for k in keys if k in data})


def grid(steps: int, span: float) -> list[float]:
    """``steps`` evenly spaced values from ``-span`` to ``span``; the middle one of an odd
    count is exactly 0.0 (so the origin is the unperturbed model, bit for bit)."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if not span > 0:
        raise ValueError(f"span must be positive, got {span}")
    return [span * (2 * i - (steps - 1)) / (steps - 1) for i in range(steps)]


def filter_normalized_direction(weight: Tensor, generator: torch.Generator) -> Tensor:
    """A Gaussian tensor shaped as ``weight`` with each filter ``d[i]`` rescaled to
    ``‖weight[i]‖``; zeros for a 1-D tensor (bias, BatchNorm) or a scalar."""
    if weight.dim() <= 1:
        return torch.zeros_like(weight)
    d = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    w = weight.detach().to("cpu", torch.float64)
    w_norm = w.flatten(1).norm(dim=1)
    d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-30)
    scale = (w_norm / d_norm).view(-1, *([1] * (w.dim() - 1)))
    return (d * scale).to(weight.device, weight.dtype)


def random_directions(model: nn.Module, count: int, seed: int) -> list[dict[str, Tensor]]:
    """``count`` filter-normalised directions (name → tensor) over the model's parameters,
    drawn in ``named_parameters`` order from one generator seeded with ``seed``: all of the
    first direction, then all of the second."""
    generator = torch.Generator().manual_seed(seed)
    params = list(model.named_parameters())
    return [
        {name: filter_normalized_direction(p, generator) for name, p in params}
        for _ in range(count)
    ]


def _point(weights: dict[str, Tensor], directions, coords: tuple[float, ...]) -> dict:
    """``w + Σ c·d``; where every coordinate is 0 the weights themselves (no rounding)."""
    if all(c == 0.0 for c in coords):
        return weights
    out = {}
    for name, w in weights.items():
        moved = w
        for c, d in zip(coords, directions):
            if c != 0.0:
                moved = moved + c * d[name]
        out[name] = moved
    return out


def loss_landscape(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    dims: int = 1,
    steps: int = 21,
    span: float = 1.0,
    seed: int = 0,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Any = None,
) -> Landscape:
    """The mean cross-entropy and accuracy of ``model`` (eval mode) on ``images`` (0–1,
    ``(N, C, H, W)``) and ``labels`` along one or two filter-normalised random directions.

    Args:
        dims: 1 (a curve) or 2 (a surface).
        steps: grid points per direction (odd, so that 0 is one of them).
        span: the grid runs from ``-span`` to ``span`` (in units of the filters' norms).
        seed: seeds the directions.
        batch_size: images per forward pass.
        progress: called with the number of grid points done and their total.
    """
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims}")
    if steps % 2 == 0:
        raise ValueError(f"steps must be odd (the grid's centre is the model), got {steps}")
    check_images(images, labels)
    alphas = grid(steps, span)
    betas = alphas if dims == 2 else None
    directions = random_directions(model, dims, seed)
    weights = {name: p.detach() for name, p in model.named_parameters()}
    points = [(a,) for a in alphas] if dims == 1 else [(a, b) for a in alphas for b in alphas]
    losses, accuracies = [], []
    with eval_mode(model):
        for done, coords in enumerate(points, 1):
            params = _point(weights, directions, coords)
            loss, acc = loss_and_accuracy(model, images, labels, params, batch_size=batch_size)
            losses.append(loss)
            accuracies.append(acc)
            if progress is not None:
                progress(done, len(points))
    if dims == 2:
        loss_grid = [losses[i * steps : (i + 1) * steps] for i in range(steps)]
        acc_grid = [accuracies[i * steps : (i + 1) * steps] for i in range(steps)]
        return Landscape(dims, alphas, betas, loss_grid, acc_grid, seed, len(images))
    return Landscape(dims, alphas, betas, losses, accuracies, seed, len(images))
