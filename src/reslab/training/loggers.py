"""Writing a run's history: CSV and JSON files, TensorBoard."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from reslab.runs import History, claim, write_history
from reslab.training.callback import Callback

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "CSVLogger",
    "TensorBoardCallback",
    "history_to_csv",
]


def history_to_csv(history: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


class CSVLogger(Callback):
    """Writes the run's history (CSV and JSON, :func:`reslab.runs.write_history`) into
    ``folder`` after every epoch.

    Both are rewritten whole and atomically from the Recorder, so a resumed run continues
    the same files and a crash never leaves a torn line.
    """

    order = 70

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def after_epoch(self) -> None:
        if not self.learn.is_main:
            return
        rec = self.learn.recorder
        history = History(rec.history, rec.lrs, rec.losses, self.learn.n_iter or None)
        write_history(self.folder, history, csv_text=history_to_csv(rec.history))


class TensorBoardCallback(Callback):
    """Scalars to TensorBoard (per-batch loss and LR, per-epoch history); needs ``tensorboard``."""

    order = 70

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs `pip install tensorboard`") from None
        self._writer_cls = SummaryWriter
        self.log_dir = str(log_dir)
        self.writer: SummaryWriter | None = None
        self._losses: list[torch.Tensor] = []
        self._iters: list[int] = []

    def before_fit(self) -> None:
        if self.learn.is_main:
            self.writer = self._writer_cls(str(claim(self.log_dir)))

    def after_batch(self) -> None:
        learn = self.learn
        if self.writer is None or not learn.training or learn.batch_loss is None:
            return
        # The loss stays on the device until the epoch's end (one read for all batches).
        self._losses.append(learn.batch_loss.detach())
        self._iters.append(learn.train_iter)
        self.writer.add_scalar("train/lr", learn.opt.param_groups[0]["lr"], learn.train_iter)

    def _write_losses(self) -> None:
        if self._losses and self.writer is not None:
            for i, loss in zip(self._iters, torch.stack(self._losses).tolist()):
                self.writer.add_scalar("train/loss", loss, i)
        self._losses, self._iters = [], []

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        self._write_losses()
        if not self.learn.recorder.history:
            return
        row = self.learn.recorder.history[-1]
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        self.writer.flush()

    def cleanup_fit(self) -> None:
        if self.writer is not None:
            self._write_losses()
            self.writer.close()
            self.writer = None
