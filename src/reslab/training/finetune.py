"""Transfer learning: freeze what was pretrained, train a new head, then (optionally) the rest.

Freezing a parameter is not enough to freeze a network with BatchNorm: in train mode a BN
layer still replaces its running statistics with those of every batch it sees, so a
"frozen" backbone quietly drifts towards the new data's statistics and its features stop
being the pretrained ones. :func:`freeze` therefore also pins every frozen BN in eval mode, in
a way that survives the ``model.train()`` a training loop calls each epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from reslab.training.learner import Learner

__all__ = [
    "FineTuneLearner",
    "adapt_to_grayscale",
    "discriminative_param_groups",
    "fine_tune",
    "freeze",
    "layer_groups",
    "resize_and_repeat",
    "trainable_summary",
    "unfreeze",
]


# ---------------------------------------------------------------------------- freezing
def layer_groups(model: nn.Module) -> list[list[nn.Module]]:
    """The model split for discriminative LRs: stem, each stage, head (input to output)."""
    stem = [getattr(model, n) for n in ("normalize", "conv1", "bn1") if hasattr(model, n)]
    return [stem, *[[s] for s in model.stages], [model.fc]]


def _is_bn(m: nn.Module) -> bool:
    # torch.nn's BatchNorms and reslab's from-scratch one (which does not subclass torch's).
    return hasattr(m, "running_mean") and hasattr(m, "track_running_stats")


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def _pin_bn(bn: nn.Module) -> None:
    # An instance attribute shadows nn.Module.train, so model.train() (which calls train()
    # on every child) leaves this BN in eval mode: its running statistics stay frozen.
    bn.eval()
    bn.train = _stay_in_eval.__get__(bn)
    bn.reslab_frozen_bn = True


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
            if _is_bn(m):
                _pin_bn(m)
    return frozen


def unfreeze(model: nn.Module) -> None:
    """Make every parameter trainable and every BatchNorm follow train/eval mode again."""
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if _is_bn(m):
            _release_bn(m)
    model.train(model.training)


# ---------------------------------------------------------------------------- grayscale
@torch.no_grad()
def adapt_to_grayscale(model: nn.Module) -> nn.Module:
    """Turn a 3-channel model into a 1-channel one that treats grey images as the 3-channel
    model treats the same image repeated into every channel.

    The stem conv becomes ``std' * sum_c W_c / std_c`` (so per-channel stds are exact) and the
    normalisation takes the channels' mean ``m'``. With equal channel means the two models
    agree everywhere; otherwise the mean difference ``sum W_c (m_c - m') / std_c`` is folded
    into the first BatchNorm's running mean, exact wherever the first conv's window lies inside
    the image; windows overlapping the zero padding differ (the 3-channel model pads with a
    different raw value per channel, which no single grey channel can reproduce).
    """
    from reslab.models import InputNormalize

    if model.in_chans != 3:
        raise ValueError(f"adapt_to_grayscale needs a 3-channel model, got {model.in_chans}")
    conv, bn = (
        (model.conv1, model.bn1)
        if hasattr(model.conv1, "weight")
        else (
            model.conv1[0],
            model.conv1[1],
        )
    )
    norm = model.normalize
    if isinstance(norm, InputNormalize):
        cfg = norm.config()
        mean = torch.tensor(cfg["mean"], dtype=torch.float64)
        std = torch.tensor(cfg["std"], dtype=torch.float64)
        scale = cfg["scale"]
    else:
        mean = torch.zeros(3, dtype=torch.float64)
        std, scale = torch.ones(3, dtype=torch.float64), 1.0
    w = conv.weight.double()
    m1, s1 = float(mean.mean()), float(std.mean())
    w1 = s1 * (w / std.view(1, 3, 1, 1)).sum(1, keepdim=True)
    shift = (w * ((mean - m1) / std).view(1, 3, 1, 1)).sum((1, 2, 3))
    conv.weight = nn.Parameter(w1.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    conv.in_channels = 1
    bn.running_mean.add_(shift.to(bn.running_mean.dtype))
    if isinstance(norm, InputNormalize):
        model.normalize = InputNormalize([m1], [s1], scale=scale, bgr=False)
    model.in_chans = 1
    cfg = model.default_cfg
    model.default_cfg = {
        **cfg,
        "input_size": (1, *cfg.get("input_size", (3, 224, 224))[1:]),
        "mean": (m1 / scale,) if isinstance(norm, InputNormalize) else cfg.get("mean"),
        "std": (s1 / scale,) if isinstance(norm, InputNormalize) else cfg.get("std"),
        "normalize": model.normalize.config() if isinstance(norm, InputNormalize) else None,
    }
    if hasattr(model, "build_config"):
        model.build_config = {
            **model.build_config,
            "in_chans": 1,
            "normalize": model.default_cfg["normalize"],
        }
    return model


# ---------------------------------------------------------------------------- optimizer
def discriminative_param_groups(model: nn.Module, wd: float, lr_mult: float = 1.0) -> list[dict]:
    """Parameter groups with ``lr_scale`` rising geometrically from ``1/lr_mult`` (stem) to 1
    (head); within each, norms and biases get no weight decay. Frozen parameters are left out.
    """
    groups_out: list[dict] = []
    layers = layer_groups(model)
    seen: set[int] = set()
    last = len(layers) - 1
    for i, group in enumerate(layers):
        scale = lr_mult ** (-(last - i) / last) if lr_mult != 1 else 1.0
        decay, no_decay = [], []
        for module in group:
            for p in module.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    (no_decay if p.ndim <= 1 else decay).append(p)
        for params, decay_wd in ((decay, wd), (no_decay, 0.0)):
            if params:
                groups_out.append({"params": params, "weight_decay": decay_wd, "lr_scale": scale})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:  # anything outside stem/stages/head (none in a ResNet) trains at the full LR
        groups_out.append({"params": rest, "weight_decay": wd, "lr_scale": 1.0})
    if not groups_out:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return groups_out


class FineTuneLearner(Learner):
    """A :class:`~reslab.training.Learner` with discriminative learning rates.

    Args:
        lr_mult: ratio between the head's LR and the stem's; the stages in between are spaced
            geometrically (fastai's ``slice(lr / lr_mult, lr)``). 1 gives one LR everywhere.
        **kwargs: as for :class:`~reslab.training.Learner`.
    """

    def __init__(self, *args, lr_mult: float = 1.0, **kwargs) -> None:
        if lr_mult < 1:
            raise ValueError(f"lr_mult must be >= 1, got {lr_mult}")
        self.lr_mult = lr_mult
        super().__init__(*args, **kwargs)

    def create_opt(self) -> torch.optim.Optimizer:
        model = self.model
        if not hasattr(model, "stages"):  # e.g. a bare head trained on cached features
            return super().create_opt()
        groups = discriminative_param_groups(model, self.wd, self.lr_mult)
        for g in groups:
            g["lr"] = self.lr * g["lr_scale"]
        if self.opt_name == "sgd":
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=True)
        elif self.opt_name == "adamw":
            opt = torch.optim.AdamW(groups, lr=self.lr, betas=(self.momentum, 0.999))
        else:
            raise ValueError(f"unknown optimizer {self.opt_name!r}; expected sgd or adamw")
        self.opt = opt
        self._opt_params = [id(p) for p in model.parameters() if p.requires_grad]
        return opt

    def set_hyper(self, name: str, value: float) -> None:
        if name != "lr":
            return super().set_hyper(name, value)
        for group in self.opt.param_groups:
            group["lr"] = value * group.get("lr_scale", 1.0)


def fine_tune(
    learn: Learner,
    epochs: int,
    base_lr: float = 2e-3,
    *,
    freeze_epochs: int = 1,
    lr_mult: float = 100.0,
    pct_start: float = 0.3,
    frozen: str = "backbone",
) -> None:
    """fastai's recipe: ``freeze_epochs`` one-cycle epochs with the backbone frozen, then
    ``epochs`` with everything trainable at half the LR, spread over ``lr_mult``."""
    model = learn.model
    freeze(model, frozen)
    if isinstance(learn, FineTuneLearner):
        learn.lr_mult = 1.0
    if freeze_epochs > 0:
        learn.opt = None
        learn.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99)
    unfreeze(model)
    if isinstance(learn, FineTuneLearner):
        learn.lr_mult = lr_mult
    learn.opt = None  # new parameter groups for the whole network
    if epochs > 0:
        learn.fit_one_cycle(epochs, base_lr / 2, pct_start=pct_start)


def resize_and_repeat(size: int | None, repeat_to: int | None) -> Callable[[Tensor], Tensor]:
    """A batch transform: bilinear (antialiased) resize to ``size``, grey → ``repeat_to`` ch."""

    def transform(x: Tensor) -> Tensor:
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        if repeat_to is not None and x.shape[1] == 1 and repeat_to != 1:
            x = x.expand(-1, repeat_to, -1, -1)
        return x

    return transform


def trainable_summary(model: nn.Module) -> str:
    """``"trainable 20,490 of 23,528,522 parameters"``."""
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable {train:,} of {total:,} parameters"
