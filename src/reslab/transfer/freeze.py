"""Freezing part of a pretrained model, BatchNorm statistics included.

Freezing a parameter is not enough to freeze a network with BatchNorm: in train mode a BN
layer still replaces its running statistics with those of every batch it sees, so a
"frozen" backbone quietly drifts towards the new data's statistics and its features stop
being the pretrained ones. :func:`freeze` therefore also pins every frozen BN in eval mode, in
a way that survives the ``model.train()`` a training loop calls each epoch.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["freeze", "is_batchnorm", "layer_groups", "trainable_summary", "unfreeze"]


def layer_groups(model: nn.Module) -> list[list[nn.Module]]:
    """The model split for discriminative LRs: stem, each stage, head (input to output)."""
    net: Any = model  # a ResNet, or any module with its ``stages`` and ``fc``
    stem = [getattr(net, n) for n in ("normalize", "conv1", "bn1") if hasattr(net, n)]
    return [stem, *[[s] for s in net.stages], [net.fc]]


def is_batchnorm(m: nn.Module) -> bool:
    # torch.nn's BatchNorms and reslab's from-scratch one (which does not subclass torch's).
    return hasattr(m, "running_mean") and hasattr(m, "track_running_stats")


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def _pin_bn(bn: nn.Module) -> None:
    # An instance attribute shadows nn.Module.train, so model.train() (which calls train()
    # on every child) leaves this BN in eval mode: its running statistics stay frozen.
    bn.eval()
    bn.__dict__.update(train=_stay_in_eval.__get__(bn), reslab_frozen_bn=True)


def _release_bn(bn: nn.Module) -> None:
    bn.__dict__.pop("train", None)
    bn.__dict__.pop("reslab_frozen_bn", None)


def freeze(model: nn.Module, spec: str = "backbone") -> list[nn.Module]:
    """Freeze part of a :class:`~reslab.models.ResNet`; return the frozen modules.

    Args:
        spec: ``"backbone"`` (all but ``fc``), ``"none"``, or ``"stages:N"`` (the stem and
            the first ``N`` stages; ``N`` = the number of stages freezes the whole backbone).

    Frozen parameters get ``requires_grad=False``; frozen BatchNorms stay in eval mode (their
    running statistics are not updated) until :func:`unfreeze`.
    """
    unfreeze(model)
    groups = layer_groups(model)
    n_stages = len(groups) - 2
    if spec == "none":
        return []
    if spec == "backbone":
        n = n_stages
    elif spec.startswith("stages:") and spec[7:].isdigit() and int(spec[7:]) <= n_stages:
        n = int(spec[7:])
    else:
        raise ValueError(
            f"--freeze must be backbone, none or stages:N with N in 0..{n_stages}, got {spec!r}"
        )
    frozen = [m for group in groups[: n + 1] for m in group]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        for m in module.modules():
            if is_batchnorm(m):
                _pin_bn(m)
    return frozen


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable and every BatchNorm follow train/eval mode again."""
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if is_batchnorm(m):
            _release_bn(m)
    model.train(model.training)


def trainable_summary(model: nn.Module) -> str:
    """``"trainable 20,490 of 23,528,522 parameters"``."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable {train:,} of {total:,} parameters"
