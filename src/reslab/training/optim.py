"""Optimizers with the usual parameter groups: no weight decay on norms and biases."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["ParamGroupFn", "create_optimizer", "param_groups"]

# ``fn(model, weight_decay) -> parameter groups``: how a Learner splits a model for its optimizer.
ParamGroupFn = Callable[[nn.Module, float], list[dict]]


def param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    One-dimensional parameters (BatchNorm/LayerNorm scales and shifts, all biases) get no
    weight decay: shrinking a BN gamma only changes the scale the next layer sees, so decaying
    it regularises nothing and slows training. Frozen parameters (``requires_grad`` False)
    are left out entirely.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": wd})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return groups


def create_optimizer(
    params: nn.Module | Iterable[dict],
    name: str = "sgd",
    *,
    lr: float = 0.1,
    wd: float = 5e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas2: float = 0.999,
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """``"sgd"`` (Nesterov momentum when ``momentum > 0``) or ``"adamw"`` (decoupled weight
    decay); ``momentum`` is AdamW's beta1.

    Args:
        params: a model (split by :func:`param_groups`) or parameter groups already made.
    """
    groups = param_groups(params, wd) if isinstance(params, nn.Module) else list(params)
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, betas2), eps=eps)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd or adamw")
