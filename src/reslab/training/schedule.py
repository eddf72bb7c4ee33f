"""Learning-rate and momentum schedules, as callbacks driven by the batch counter.

A schedule is a pure function of the global batch index, so nothing about it needs saving:
a resumed run recomputes exactly the value the uninterrupted run would have used.
"""

from __future__ import annotations

import math
from typing import Any

from reslab.training.callback import Callback

__all__ = ["OneCycleSchedule", "StepSchedule", "cos_anneal", "one_cycle", "step_lr"]


def cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine interpolation from ``start`` (pct 0) to ``end`` (pct 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(
    step: int,
    total: int,
    max_lr: float,
    *,
    div: float = 25.0,
    div_final: float = 1e4,
    pct_start: float = 0.25,
    moms: tuple[float, float] = (0.95, 0.85),
) -> tuple[float, float]:
    """``(lr, momentum)`` at batch ``step`` of ``total`` under the one-cycle policy.

    Phase 1 (first ``pct_start`` of the batches): LR rises from ``max_lr/div`` to ``max_lr``
    while momentum falls from ``moms[0]`` to ``moms[1]``; phase 2: LR anneals to
    ``max_lr/(div*div_final)`` while momentum climbs back. Both phases use cosine
    interpolation; the phase boundaries follow ``torch.optim.lr_scheduler.OneCycleLR``.
    """
    if total < 2:
        return max_lr, moms[1]
    start_lr = max_lr / div
    min_lr = start_lr / div_final
    warm_end = float(pct_start * total) - 1
    if step <= warm_end:
        pct = step / warm_end if warm_end > 0 else 1.0
        return cos_anneal(start_lr, max_lr, pct), cos_anneal(moms[0], moms[1], pct)
    pct = (step - warm_end) / (total - 1 - warm_end)
    return cos_anneal(max_lr, min_lr, pct), cos_anneal(moms[1], moms[0], pct)


class OneCycleSchedule(Callback):
    """Sets LR and momentum before every training batch (see :func:`one_cycle`)."""

    order = -5

    def __init__(
        self,
        max_lr: float,
        *,
        div: float = 25.0,
        div_final: float = 1e4,
        pct_start: float = 0.25,
        moms: tuple[float, float] = (0.95, 0.85),
    ) -> None:
        self.max_lr = max_lr
        self.kwargs: dict[str, Any] = {
            "div": div,
            "div_final": div_final,
            "pct_start": pct_start,
            "moms": moms,
        }

    def values(self, step: int) -> tuple[float, float]:
        total = self.learn.n_epoch * self.learn.n_iter
        return one_cycle(step, total, self.max_lr, **self.kwargs)

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        lr, mom = self.values(self.learn.train_iter)
        self.learn.set_hyper("lr", lr)
        self.learn.set_hyper("momentum", mom)


def step_lr(
    epoch: int,
    base_lr: float,
    milestones: tuple[int, ...],
    gamma: float = 0.1,
    warmup: int = 0,
) -> float:
    """The LR in ``epoch`` (0-based) under a step schedule: ``base_lr`` times ``gamma`` for
    every milestone already reached (``torch.optim.lr_scheduler.MultiStepLR``'s rule), and
    ``base_lr * gamma`` during the first ``warmup`` epochs.

    He et al. (2015), CIFAR-10: ``base_lr=0.1``, divided by 10 at 32k and 48k of 64k
    iterations, i.e. milestones 82 and 123 of 164 epochs at batch 128 on 50k images. Their
    110-layer nets start at 0.01 "until the training error is below 80 % (about 400
    iterations)": ``warmup=1`` (391 iterations) is the fixed-length version of that.
    """
    if epoch < warmup:
        return base_lr * gamma
    return base_lr * gamma ** sum(1 for m in milestones if epoch >= m)


class StepSchedule(Callback):
    """Sets the LR at the start of every epoch (see :func:`step_lr`); momentum is left alone."""

    order = -5

    def __init__(
        self, base_lr: float, milestones: tuple[int, ...], gamma: float = 0.1, warmup: int = 0
    ) -> None:
        if any(m < 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing positive epochs, got {milestones}")
        if warmup < 0 or (milestones and warmup >= milestones[0]):
            raise ValueError(f"warm-up must end before the first milestone, got {warmup} epochs")
        self.base_lr, self.milestones, self.gamma = base_lr, tuple(milestones), gamma
        self.warmup = warmup

    def before_batch(self) -> None:
        if self.learn.training:
            lr = step_lr(self.learn.epoch, self.base_lr, self.milestones, self.gamma, self.warmup)
            self.learn.set_hyper("lr", lr)
