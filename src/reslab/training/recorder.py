"""The Recorder: per-epoch history and per-batch LR and loss of a run."""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from reslab.training.callback import Callback
from reslab.training.distributed import all_reduce_sum

__all__ = ["Recorder"]


class Recorder(Callback):
    """Per-epoch history (train loss, running train accuracy, validation loss and metrics, LR,
    time, samples/s) and per-batch LR and loss.

    ``train_accuracy`` is the running accuracy of the training batches as they were trained on
    (train mode, augmented, weights changing), pooled over processes — the paper's "training
    error" is measured cleanly instead by :class:`~reslab.training.ExtraValidation`.
    """

    order = 50

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.elapsed = 0.0  # training seconds over all (resumed) sessions
        self._epoch_state: dict[str, float] = self._fresh()

    @staticmethod
    def _fresh() -> dict[str, float]:
        return {
            "loss_sum": 0.0, "n": 0, "samples": 0, "train_time": 0.0, "time": 0.0,
            "correct": 0, "scored": 0,
        }  # fmt: skip

    def before_fit(self) -> None:
        self._t_mark = time.perf_counter()

    def _tick(self) -> None:
        now = time.perf_counter()
        self._epoch_state["time"] += now - self._t_mark
        self.elapsed += now - self._t_mark
        self._t_mark = now

    def before_epoch(self) -> None:
        self._tick()
        learn = self.learn
        if not (learn.epoch == learn.start_epoch and learn.start_iter > 0):
            self._epoch_state = self._fresh()

    def before_train(self) -> None:
        self._t_train = time.perf_counter()

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or learn.batch_loss is None:
            return
        value = float(learn.batch_loss)
        self.losses.append(value)
        self.lrs.append(float(learn.opt.param_groups[0]["lr"]))
        bs = len(learn.yb)
        st = self._epoch_state
        st["loss_sum"] += value * bs
        st["n"] += bs
        st["samples"] += bs * learn.world_size
        pred = learn.pred
        if pred is not None and pred.ndim == 2 and pred.shape[0] == bs:
            st["correct"] = st.get("correct", 0) + int((pred.argmax(-1) == learn.yb).sum())
            st["scored"] = st.get("scored", 0) + bs
        now = time.perf_counter()
        st["train_time"] += now - self._t_train
        self._t_train = now

    def after_epoch(self) -> None:
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
        self._tick()

    def state_dict(self) -> dict[str, Any]:
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
