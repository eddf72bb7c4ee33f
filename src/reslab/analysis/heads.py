"""Classifier heads to look at: a bias-free linear head and a VGG-style multi-layer head.

ResNet's head is one linear layer over a pooled embedding; VGG's is an MLP
(Linear–ReLU–Dropout–Linear–ReLU–Dropout–Linear) over the flattened feature map. Their
decision regions differ in kind: straight boundaries through (near) the origin for the first,
curved ones for a trained second.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["fit_head", "head_accuracy", "linear_head", "vgg_head"]


def linear_head(in_features: int, num_classes: int, *, bias: bool = False) -> nn.Linear:
    """One linear layer, bias-free by default (its regions are then sectors)."""
    return nn.Linear(in_features, num_classes, bias=bias)


def vgg_head(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (512, 512),
    *,
    dropout: float = 0.5,
    init: str = "vgg",
) -> nn.Sequential:
    """VGG's classifier shape: ``(Linear–ReLU–Dropout) x len(hidden)``, then a Linear.

    The last layer has no bias (VGG's zeroed), so every class is a vector in the last hidden
    space, exactly as in a ResNet head; the curvature comes from the layers before it.

    Args:
        in_features, num_classes: input width and number of classes.
        hidden: widths of the hidden layers.
        dropout: dropout probability after each hidden layer.
        init: ``"vgg"`` (torchvision's VGG init: weights N(0, 0.01), biases 0) or
            ``"torch"`` (``nn.Linear``'s default, which draws random biases). With zero biases
            a ReLU head is positively homogeneous, ``f(c x) = c f(x)`` for ``c > 0``, so the
            untrained head's regions are exact sectors; random biases bend them near the origin.
    """
    if init not in ("vgg", "torch"):
        raise ValueError(f"unknown init {init!r}; expected 'vgg' or 'torch'")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, num_classes, bias=False))
    if init == "vgg":
        for m in layers:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def fit_head(
    head: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Train ``head`` on in-memory features with AdamW and cross-entropy; return epoch losses.

    A small loop for heads over cached features; whole models train with ``reslab.Learner``.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
    head.eval()
    return history


@torch.no_grad()
def head_accuracy(head: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of ``head`` on in-memory features (eval mode)."""
    head.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = head(x[start : start + batch_size]).argmax(1)
        correct += int((pred == y[start : start + batch_size]).sum())
    return correct / max(1, len(x))
