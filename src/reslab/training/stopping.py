"""Stopping a run: on a NaN/infinite loss, or when a metric stops improving."""

from __future__ import annotations

import math
from typing import Any

import torch

from reslab.training.callback import Callback, CancelFitException, TrainingDiverged

__all__ = [
    "EarlyStopping",
    "TerminateOnNaN",
]


class TerminateOnNaN(Callback):
    """Stop with :class:`TrainingDiverged` when the loss is NaN or infinite.

    It checks ``learn.batch_loss``, the batch loss averaged over all processes, so under
    torchrun every process sees the same value and all stop together.
    """

    order = -20
    enabled = True  # the LR finder switches the check off: it drives the loss up on purpose

    def after_loss(self) -> None:
        learn = self.learn
        loss = learn.batch_loss
        if self.enabled and learn.training and not bool(torch.isfinite(loss)):
            where = f"epoch {learn.epoch + 1}, batch {learn.iter + 1} (step {learn.step})"
            ckpt = getattr(learn, "last_checkpoint", None)
            kept = f"; last good checkpoint: {ckpt}" if ckpt else "; no checkpoint was written"
            raise TrainingDiverged(
                f"loss became {float(loss)} at {where}: training stopped (try a lower "
                f"learning rate or gradient clipping){kept}"
            )


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 95  # after SaveCheckpoint (90): the last epoch is saved before stopping

    def __init__(
        self, monitor: str = "valid_loss", patience: int = 3, min_delta: float = 0.0
    ) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.sign = -1.0 if "loss" in monitor else 1.0  # losses fall, accuracies rise
        self.best = -math.inf
        self.wait = 0

    def before_fit(self) -> None:
        learn = self.learn
        if not (learn.start_epoch or learn.start_iter):  # a new fit, not a resumed one
            self.best, self.wait = -math.inf, 0

    def after_epoch(self) -> None:
        row = self.learn.recorder.history[-1]
        if self.monitor not in row:
            raise ValueError(f"EarlyStopping: {self.monitor!r} is not recorded (have {list(row)})")
        value = self.sign * float(row[self.monitor])
        if value > self.best + self.min_delta:
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            raise CancelFitException

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
