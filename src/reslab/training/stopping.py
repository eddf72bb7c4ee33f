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
    """Stop with :class:`TrainingDiverged` when a batch loss was NaN or infinite.

    The batch losses stay on the device (see :class:`~reslab.training.Recorder`), so the check
    runs where they are read anyway: at the end of every epoch's training, before every
    checkpoint (:class:`~reslab.training.SaveCheckpoint` calls :meth:`check`, so no checkpoint
    is written after a non-finite loss) and, with ``every``, every ``every`` batches. The
    message names the epoch and batch where the loss first became non-finite; training may
    have run on until the check. ``every=1`` stops at the bad batch itself, before its
    optimizer step, at the price of one host synchronisation per batch.

    The losses are averaged over all processes and the checks fall on the same batches
    everywhere, so under torchrun all processes stop together.
    """

    order = -20
    enabled = True  # the LR finder switches the check off: it drives the loss up on purpose

    def __init__(self, every: int | None = None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be a positive number of batches, got {every}")
        self.every = every

    def check(self) -> None:
        """Read the pending batch losses; raise if one was not finite."""
        rec = getattr(self.learn, "recorder", None)
        if rec is None or not self.enabled:
            return
        rec.flush()
        if rec.nonfinite is not None:
            found, rec.nonfinite = rec.nonfinite, None  # reported once: a later fit starts clean
            self._stop(*found)

    def _stop(self, loss: float, epoch: int, batch: int, step: int) -> None:
        learn = self.learn
        where = f"epoch {epoch + 1}, batch {batch + 1} (step {step})"
        if (epoch, batch) != (learn.epoch, learn.iter):
            where += f", noticed at epoch {learn.epoch + 1}, batch {learn.iter + 1}"
        ckpt = getattr(learn, "last_checkpoint", None)
        kept = f"; last good checkpoint: {ckpt}" if ckpt else "; no checkpoint was written"
        raise TrainingDiverged(
            f"loss became {loss} at {where}: training stopped (try a lower learning rate or "
            f"gradient clipping){kept}"
        )

    def after_loss(self) -> None:
        learn = self.learn
        if self.every == 1 and self.enabled and learn.training:
            loss = learn.batch_loss
            if not bool(torch.isfinite(loss)):
                self._stop(float(loss), learn.epoch, learn.iter, learn.step)

    def after_batch(self) -> None:
        learn = self.learn
        every = self.every or 0
        if every > 1 and learn.training and (learn.train_iter + 1) % every == 0:
            self.check()

    def after_train(self) -> None:
        self.check()

    def after_epoch(self) -> None:
        self.check()  # an epoch cancelled mid-way skipped after_train


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
