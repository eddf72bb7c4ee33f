"""fastai's fine-tuning recipe on the ordinary Learner: discriminative learning rates are
parameter groups with an ``lr_scale``, from the stem (smallest) to the head (largest)."""

from __future__ import annotations

import functools
from pathlib import Path

from torch import nn

from reslab.runs import names
from reslab.training import Learner, add_checkpoint_meta, read_checkpoint_meta
from reslab.training.optim import ParamGroupFn
from reslab.transfer.freeze import freeze, layer_groups, unfreeze

__all__ = ["discriminative_groups", "discriminative_param_groups", "fine_tune"]


def discriminative_param_groups(lr_mult: float = 1.0) -> ParamGroupFn:
    """Parameter groups for :class:`~reslab.training.Learner` (its ``param_groups``) with
    ``lr_scale`` rising geometrically from ``1/lr_mult`` (stem) to 1 (head) — fastai's
    ``slice(lr / lr_mult, lr)``; within each, norms and biases get no weight decay. Frozen
    parameters are left out."""
    if lr_mult < 1:
        raise ValueError(f"lr_mult must be >= 1, got {lr_mult}")
    return functools.partial(discriminative_groups, lr_mult=lr_mult)


def discriminative_groups(model: nn.Module, wd: float, lr_mult: float) -> list[dict]:
    """The groups :func:`discriminative_param_groups` describes, for ``model`` now."""
    out: list[dict] = []
    stages = layer_groups(model)
    seen: set[int] = set()
    last = len(stages) - 1
    for i, group in enumerate(stages):
        scale = lr_mult ** (-(last - i) / last) if lr_mult != 1 else 1.0
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for p in (p for module in group for p in module.parameters()):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                (no_decay if p.ndim <= 1 else decay).append(p)
        for params, decay_wd in ((decay, wd), (no_decay, 0.0)):
            if params:
                out.append({"params": params, "weight_decay": decay_wd, "lr_scale": scale})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:  # anything outside stem/stages/head (none in a ResNet) trains at the full LR
        out.append({"params": rest, "weight_decay": wd, "lr_scale": 1.0})
    if not out:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return out


def fine_tune(
    learn: Learner,
    epochs: int,
    base_lr: float = 2e-3,
    *,
    freeze_epochs: int = 1,
    lr_mult: float = 100.0,
    pct_start: float = 0.3,
    frozen: str = "backbone",
    resume: str | Path | None = None,
) -> None:
    """fastai's recipe: ``freeze_epochs`` one-cycle epochs with the backbone frozen, then
    ``epochs`` with everything trainable at half the LR, spread over ``lr_mult``.

    Checkpoints (a :class:`~reslab.training.SaveCheckpoint` on ``learn``) record which of the
    two fits they were written in; ``resume`` (a run folder or checkpoint) continues from one.
    """
    phase = read_checkpoint_meta(_checkpoint(resume)).get("phase") if resume else None
    if phase != "unfrozen":
        freeze(learn.model, frozen)
        add_checkpoint_meta(learn, phase="frozen")
        if resume:
            learn.resume(resume)
        if freeze_epochs > 0:
            learn.fit_one_cycle(freeze_epochs, base_lr, pct_start=0.99)
    unfreeze(learn.model)
    learn.param_groups = discriminative_param_groups(lr_mult)
    add_checkpoint_meta(learn, phase="unfrozen")
    if phase == "unfrozen" and resume:  # (a phase is only read from a resume)
        learn.epochs_done = freeze_epochs
        learn.resume(resume)
    if epochs > 0:
        learn.fit_one_cycle(epochs, base_lr / 2, pct_start=pct_start)


def _checkpoint(path: str | Path) -> Path:
    path = Path(path)
    return path / names.CHECKPOINT if path.is_dir() else path
