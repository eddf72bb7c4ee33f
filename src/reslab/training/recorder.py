"""The Recorder: per-epoch history and per-batch LR and loss of a run.

Nothing here reads a tensor back to the host during a batch: each batch's loss and its count
of correct predictions stay on the training device, and :meth:`Recorder.flush` reads all that
is pending in one transfer (at the end of every epoch, for a checkpoint, for the progress bar).
A GPU therefore never waits for the host between batches.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch
from torch import Tensor

from reslab.training.callback import Callback
from reslab.training.distributed import all_reduce_sum

__all__ = ["Recorder"]


class Recorder(Callback):
    """Per-epoch history (train loss, running train accuracy, validation loss and metrics, LR,
    time, samples/s) and per-batch LR and loss.

    ``train_accuracy`` is the running accuracy of the training batches as they were trained on
    (train mode, augmented, weights changing), pooled over processes — the paper's "training
    error" is measured cleanly instead by :class:`~reslab.training.ExtraValidation`.

    ``losses`` holds the batch losses read so far; call :meth:`flush` first to include the
    batches still pending on the device. ``nonfinite`` is the first non-finite batch loss read
    since the fit began, as ``(loss, epoch, batch, step)`` (what
    :class:`~reslab.training.TerminateOnNaN` reports), else ``None``.
    """

    order = 50

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.elapsed = 0.0  # training seconds over all (resumed) sessions
        self.nonfinite: tuple[float, int, int, int] | None = None
        self._epoch_state: dict[str, float] = self._fresh()
        self._drop_pending()

    @staticmethod
    def _fresh() -> dict[str, float]:
        return {
            "loss_sum": 0.0, "n": 0, "samples": 0, "train_time": 0.0, "time": 0.0,
            "correct": 0, "scored": 0,
        }  # fmt: skip

    def _drop_pending(self) -> None:
        self._pending: list[Tensor] = []  # batch losses on the device, not read yet
        self._pending_info: list[tuple[int, int, int, int]] = []  # (size, epoch, batch, step)
        self._guesses: list[tuple[Tensor, Tensor]] = []  # (predicted, true) classes, unread

    def before_fit(self) -> None:
        self._t_mark = time.perf_counter()
        self.nonfinite = None

    def _tick(self) -> None:
        now = time.perf_counter()
        self._epoch_state["time"] += now - self._t_mark
        self.elapsed += now - self._t_mark
        self._t_mark = now

    def before_epoch(self) -> None:
        self._tick()
        learn = self.learn
        if not (learn.epoch == learn.start_epoch and learn.start_iter > 0):
            self.flush()  # nothing is pending here unless an epoch ended unusually
            self._epoch_state = self._fresh()

    def before_train(self) -> None:
        self._t_train = time.perf_counter()

    def _tick_train(self) -> None:
        now = time.perf_counter()
        self._epoch_state["train_time"] += now - self._t_train
        self._t_train = now

    def after_loss(self) -> None:
        self._step_before = self.learn.step  # optimizer steps taken before this batch's

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or learn.batch_loss is None:
            return
        bs = len(learn.yb)
        self._pending.append(learn.batch_loss.detach())
        step = getattr(self, "_step_before", learn.step)
        self._pending_info.append((bs, learn.epoch, learn.iter, step))
        self.lrs.append(float(learn.opt.param_groups[0]["lr"]))
        st = self._epoch_state
        st["n"] += bs
        st["samples"] += bs * learn.world_size
        pred = learn.pred
        if pred is not None and pred.ndim == 2 and pred.shape[0] == bs:
            self._guesses.append((pred.detach().argmax(-1), learn.yb))  # compared at the read
            st["scored"] = st.get("scored", 0) + bs
        self._tick_train()

    def flush(self) -> None:
        """Read every pending batch value from the device in one transfer: append the losses to
        ``losses`` and add them and the correct predictions to the epoch's totals."""
        if not self._pending and not self._guesses:
            return
        parts = [torch.stack(self._pending).double()] if self._pending else []
        if self._guesses:
            guessed, true = (torch.cat(t) for t in zip(*self._guesses))
            parts.append((guessed == true).sum().double().reshape(1))
        values = torch.cat([p.to(parts[0].device) for p in parts]).tolist()
        st = self._epoch_state
        if self._guesses:
            st["correct"] = st.get("correct", 0) + int(values.pop())
        for value, (bs, epoch, batch, step) in zip(values, self._pending_info):
            self.losses.append(value)
            st["loss_sum"] += value * bs
            if self.nonfinite is None and not math.isfinite(value):
                self.nonfinite = (value, epoch, batch, step)
        self._drop_pending()

    @property
    def running_accuracy(self) -> float | None:
        """This epoch's training accuracy so far (this process's batches, as of the last
        :meth:`flush`), or ``None`` when no batch was scored."""
        st = self._epoch_state
        return st["correct"] / st["scored"] if st.get("scored") else None

    def after_train(self) -> None:
        self.flush()  # reading the last loss waits for the device: the epoch's time is real
        if self.learn.device.type == "cuda":
            torch.cuda.synchronize(self.learn.device)  # the last backward and step too
        self._tick_train()

    def after_epoch(self) -> None:
        self.flush()
        self._tick()
        st = self._epoch_state
        row: dict[str, Any] = {"epoch": self.learn.epochs_done + self.learn.epoch + 1}
        row["train_loss"] = st["loss_sum"] / st["n"] if st["n"] else float("nan")
        correct, scored = self._pooled(int(st.get("correct", 0)), int(st.get("scored", 0)))
        if scored:
            row["train_accuracy"] = correct / scored
        row.update(self.learn.valid_results)
        row["lr"] = self.lrs[-1] if self.lrs else self.learn.lr
        row["time"] = round(st["time"], 3)
        row["samples_per_s"] = round(st["samples"] / st["train_time"], 1) if st["train_time"] else 0
        self.history.append(row)

    def _pooled(self, correct: int, scored: int) -> tuple[int, int]:
        if self.learn.world_size == 1:
            return correct, scored
        totals = all_reduce_sum(torch.tensor([correct, scored], dtype=torch.float64))
        return int(totals[0]), int(totals[1])

    def after_fit(self) -> None:
        self.flush()
        self._tick()

    def state_dict(self) -> dict[str, Any]:
        self.flush()
        if hasattr(self, "_t_mark"):
            self._tick()
        return {
            "history": json.dumps(self.history),
            "lrs": torch.tensor(self.lrs, dtype=torch.float64),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "elapsed": self.elapsed,
            "epoch_state": dict(self._epoch_state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = json.loads(state["history"])
        self.lrs = state["lrs"].tolist()
        self.losses = state["losses"].tolist()
        self.elapsed = float(state["elapsed"])
        self._epoch_state = dict(state["epoch_state"])
        self._drop_pending()
        self.nonfinite = None
