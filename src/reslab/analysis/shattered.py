"""Shattered gradients (Balduzzi et al., "The Shattered Gradients Problem: If resnets are the
answer, then what is the question?", ICML 2017).

Along a line of inputs ``x(t)`` (a 1-D sweep ``x0 + t·u`` or the segment between two images)
the gradient of one output (a class logit) with respect to the input is computed at every
point. In a deep plain network it decorrelates from one point to the next until it is white
noise; with skip connections it stays correlated. Measured here: the autocorrelation of the
gradient along the line (each input dimension's series standardised over the line, the
products at each lag averaged over positions and dimensions), its lag-1 value and its
correlation length (the lag where it first falls below 1/e), the derivative along the line
(``∇f·dx/dt``, the paper's 1-D picture) and the norm of the gradient with respect to each
block's output (how it grows or vanishes with depth).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from reslab.analysis.blocks import blocks_of
from reslab.analysis.objective import eval_mode
from reslab.models import ResNet

__all__ = [
    "GradientLine",
    "autocorrelation",
    "calibrate_batchnorm",
    "correlation_length",
    "image_segment",
    "line_gradients",
    "shattering",
    "sweep_line",
]

POINTS = 256  # inputs along the line (the paper samples 256 points)
MAX_LAG = 32  # autocorrelation lags reported
GRAD_BATCH = 64  # inputs per backward pass
SWEEP_STD = 0.25  # a sweep's direction: per-pixel std (0–1 pixel units) of x(1) - x(0)


def sweep_line(
    shape: tuple[int, ...], points: int = POINTS, *, seed: int = 0, span: float = 1.0
) -> tuple[Tensor, Tensor]:
    """A 1-D sweep through mid-grey: ``x(t) = 0.5 + t·u`` for ``t`` in ``[-span, span]``, ``u``
    Gaussian with per-pixel std ``SWEEP_STD`` (drawn from ``seed``). Returns the inputs
    ``(points, *shape)`` and ``dx/dt`` (``u``)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(shape, generator=generator) * SWEEP_STD
    t = torch.linspace(-span, span, points).view(-1, *([1] * len(shape)))
    return 0.5 + t * u, u


def image_segment(start: Tensor, end: Tensor, points: int = POINTS) -> tuple[Tensor, Tensor]:
    """The segment from one image to another, ``x(t) = start + t·(end - start)`` for ``t`` in
    ``[0, 1]``; returns the inputs and ``dx/dt``."""
    if start.shape != end.shape:
        raise ValueError(f"images of shapes {tuple(start.shape)} and {tuple(end.shape)}")
    t = torch.linspace(0, 1, points).view(-1, *([1] * start.dim()))
    return start + t * (end - start), end - start


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to the statistics of ``images`` (as a
    training-mode forward pass would normalise them); returns the model, changed in place.
    At initialisation the stored statistics (mean 0, variance 1) are not what the network
    sees in training; a deep net without them explodes or vanishes in eval mode."""
    norms = [  # torch's BatchNorms and the from-scratch layer set's, which mirrors them
        m for m in model.modules()
        if getattr(m, "running_mean", None) is not None and hasattr(m, "reset_running_stats")
    ]  # fmt: skip
    saved: dict[nn.Module, Any] = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()  # type: ignore[operator]
        # a cumulative average: after one batch, that batch's statistics
        m.momentum = None  # type: ignore[assignment]
    training = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        param = next(model.parameters())
        model(images.to(param.device, param.dtype))
    finally:
        for m, mode in training:
            m.training = mode
        for m in norms:
            m.momentum = saved[m]
    return model


def autocorrelation(signals: Tensor, max_lag: int = MAX_LAG) -> list[float]:
    """The autocorrelation of ``signals`` along their first axis (``(T,)`` or ``(T, D)``:
    ``D`` series of length ``T``), lags 0…``max_lag``: each series is standardised (mean 0,
    variance 1 over ``T``), ``ρ(ℓ)`` is the mean of ``z(t)·z(t+ℓ)`` over ``t`` and the series.
    Constant series carry no information and are left out."""
    x = signals.detach().double()
    x = x.reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError("need at least two points along the line")
    max_lag = min(max_lag, len(x) - 1)
    std = x.std(dim=0, unbiased=False)
    keep = std > 1e-12 * std.max().clamp_min(1e-300)
    if not keep.any():
        raise ValueError("the gradient is constant along the line: no correlation to measure")
    z = (x[:, keep] - x[:, keep].mean(dim=0)) / std[keep]
    return [float((z[: len(z) - lag] * z[lag:]).mean()) for lag in range(max_lag + 1)]


def correlation_length(acf: list[float]) -> float:
    """The lag (in points, linearly interpolated) where ``acf`` first falls below 1/e;
    ``inf`` when it never does within the lags given."""
    threshold = math.exp(-1)
    for lag in range(1, len(acf)):
        if acf[lag] < threshold:
            before, after = acf[lag - 1], acf[lag]
            return lag - 1 + (before - threshold) / (before - after)
    return math.inf


def line_gradients(
    model: nn.Module, inputs: Tensor, *, target: int = 0, batch_size: int = GRAD_BATCH
) -> tuple[Tensor, dict[str, Tensor]]:
    """The gradient of logit ``target`` with respect to each input (eval mode): ``(T, *input)``,
    and per block (:func:`~reslab.analysis.blocks.blocks_of`) the norm of the gradient with
    respect to its output at each input, ``(T,)``. The model is left as it was."""
    blocks = blocks_of(cast(ResNet, model)) if hasattr(model, "stages") else []
    norms: dict[str, list[Tensor]] = {name: [] for name, _ in blocks}

    def keep_norm(name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if output.requires_grad:
                output.register_hook(lambda g: norms[name].append(g.flatten(1).norm(dim=1)))

        return hook

    handles = [block.register_forward_hook(keep_norm(name)) for name, block in blocks]
    param = next(model.parameters())
    grads = []
    try:
        with eval_mode(model), torch.enable_grad():
            for chunk in inputs.split(batch_size):
                x = chunk.to(param.device, param.dtype).requires_grad_(True)
                out = model(x)[:, target].sum()
                (g,) = torch.autograd.grad(out, x)
                grads.append(g.detach().cpu())
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(grads), {name: torch.cat(v).cpu() for name, v in norms.items() if v}


@dataclass
class GradientLine:
    """What :func:`shattering` measures on one network along one line."""

    acf: list[float]
    lag1: float
    correlation_length: float
    derivative: list[float]  # d f(x(t)) / dt along the line
    input_grad_norm: float  # mean over the line of ‖∂f/∂x‖
    block_grad_norms: dict[str, float]  # block → mean over the line of ‖∂f/∂(block output)‖

    def to_dict(self) -> dict:
        out = asdict(self)
        if math.isinf(self.correlation_length):
            out["correlation_length"] = None  # JSON has no infinity: "beyond max_lag"
        return out


def shattering(
    model: nn.Module,
    inputs: Tensor,
    direction: Tensor,
    *,
    target: int = 0,
    max_lag: int = MAX_LAG,
    calibrate: bool = False,
) -> GradientLine:
    """Gradient correlations of ``model`` along ``inputs`` (``(T, C, H, W)``, consecutive
    points of a line with velocity ``direction``). ``calibrate``: measure a copy of the model
    whose BatchNorm statistics are those of the line's inputs (for networks at
    initialisation; see :func:`calibrate_batchnorm`)."""
    if calibrate:
        model = calibrate_batchnorm(copy.deepcopy(model), inputs)
    grads, blocks = line_gradients(model, inputs, target=target)
    acf = autocorrelation(grads.flatten(1), max_lag)
    derivative = (grads.flatten(1).double() @ direction.flatten().double()).tolist()
    return GradientLine(
        acf=acf,
        lag1=acf[1],
        correlation_length=correlation_length(acf),
        derivative=derivative,
        input_grad_norm=float(grads.flatten(1).norm(dim=1).mean()),
        block_grad_norms={name: float(v.mean()) for name, v in blocks.items()},
    )
