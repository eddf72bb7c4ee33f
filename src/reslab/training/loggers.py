"""Watching a run: the Recorder (history), tqdm bars, NaN stop, CSV/JSON/TensorBoard, early stop."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from reslab.training.callback import Callback, CancelFitException, TrainingDiverged

__all__ = [
    "CSVLogger",
    "EarlyStopping",
    "ProgressCallback",
    "Recorder",
    "TensorBoardCallback",
    "TerminateOnNaN",
    "history_to_csv",
]


class TerminateOnNaN(Callback):
    """Stop with :class:`TrainingDiverged` when the loss is NaN or infinite.

    It also leaves ``learn.batch_loss``: the batch loss averaged over all processes.
    Under torchrun every process sees the same value, so all stop together.
    """

    order = -20
    enabled = True  # the LR finder switches the check off: it drives the loss up on purpose

    def after_loss(self) -> None:
        learn = self.learn
        loss = learn.loss.detach().float()
        if learn.world_size > 1:
            from reslab.training.distributed import all_reduce_sum

            loss = all_reduce_sum(loss.clone()) / learn.world_size
        learn.batch_loss = loss
        if self.enabled and learn.training and not bool(torch.isfinite(loss)):
            where = f"epoch {learn.epoch + 1}, batch {learn.iter + 1} (step {learn.step})"
            ckpt = getattr(learn, "last_checkpoint", None)
            kept = f"; last good checkpoint: {ckpt}" if ckpt else "; no checkpoint was written"
            raise TrainingDiverged(
                f"loss became {float(loss)} at {where}: training stopped (try a lower "
                f"learning rate or gradient clipping){kept}"
            )


class Recorder(Callback):
    """Per-epoch history (train loss, validation loss and metrics, LR, time, samples/s)
    and per-batch LR and loss."""

    order = 50

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.elapsed = 0.0  # training seconds over all (resumed) sessions
        self._epoch_state: dict[str, float] = self._fresh()

    @staticmethod
    def _fresh() -> dict[str, float]:
        return {"loss_sum": 0.0, "n": 0, "samples": 0, "train_time": 0.0, "time": 0.0}

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
        if not learn.training or getattr(learn, "batch_loss", None) is None:
            return
        value = float(learn.batch_loss)
        self.losses.append(value)
        self.lrs.append(float(learn.opt.param_groups[0]["lr"]))
        bs = len(learn.yb)
        st = self._epoch_state
        st["loss_sum"] += value * bs
        st["n"] += bs
        st["samples"] += bs * learn.world_size
        now = time.perf_counter()
        st["train_time"] += now - self._t_train
        self._t_train = now

    def after_epoch(self) -> None:
        self._tick()
        st = self._epoch_state
        row: dict[str, Any] = {"epoch": self.learn.epoch + 1}
        row["train_loss"] = st["loss_sum"] / st["n"] if st["n"] else float("nan")
        row.update(self.learn.valid_results)
        row["lr"] = self.lrs[-1] if self.lrs else self.learn.lr
        row["time"] = round(st["time"], 3)
        row["samples_per_s"] = round(st["samples"] / st["train_time"], 1) if st["train_time"] else 0
        self.history.append(row)

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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class ProgressCallback(Callback):
    """tqdm bars for epochs and batches (live loss and accuracy); one summary line per epoch.

    Only the main process (rank 0) draws.
    """

    order = 60

    def before_fit(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.ebar = self.bbar = None
        if self.learn.is_main:
            self.ebar = tqdm(
                total=self.learn.n_epoch,
                initial=self.learn.start_epoch,
                desc="epochs",
                unit="ep",
                dynamic_ncols=True,
            )

    def before_train(self) -> None:
        learn = self.learn
        self._smooth, self._correct, self._seen = None, 0, 0
        if learn.is_main:
            start = learn.start_iter if learn.epoch == learn.start_epoch else 0
            self.bbar = self._tqdm(
                total=learn.n_iter,
                initial=start,
                leave=False,
                desc=f"epoch {learn.epoch + 1}",
                dynamic_ncols=True,
            )

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or self.bbar is None:
            return
        if getattr(learn, "batch_loss", None) is not None:
            v = float(learn.batch_loss)
            self._smooth = v if self._smooth is None else 0.9 * self._smooth + 0.1 * v
        pred = learn.pred
        if pred is not None and pred.ndim == 2 and pred.shape[0] == len(learn.yb):
            self._correct += int((pred.argmax(-1) == learn.yb).sum())
            self._seen += len(learn.yb)
        post = {"loss": f"{self._smooth:.4f}"} if self._smooth is not None else {}
        if self._seen:
            post["acc"] = f"{self._correct / self._seen:.4f}"
        self.bbar.set_postfix(post, refresh=False)
        self.bbar.update(1)

    def after_train(self) -> None:
        if self.bbar is not None:
            self.bbar.close()
            self.bbar = None

    def after_epoch(self) -> None:
        if self.ebar is None:
            return
        self.ebar.update(1)
        rec = getattr(self.learn, "recorder", None)
        if rec is not None and rec.history:
            row = rec.history[-1]
            line = "  ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != "epoch")
            self.ebar.write(f"epoch {row['epoch']}/{self.learn.n_epoch}  {line}")

    def cleanup_fit(self) -> None:
        for bar in (getattr(self, "bbar", None), getattr(self, "ebar", None)):
            if bar is not None:
                bar.close()
        self.ebar = self.bbar = None


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
    """Writes ``history.csv`` and ``history.json`` into ``folder`` after every epoch.

    Both are rewritten whole and atomically from the Recorder, so a resumed run continues
    the same files and a crash never leaves a torn line.
    """

    order = 70

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def after_epoch(self) -> None:
        if not self.learn.is_main:
            return
        from reslab.weights.io import atomic_write

        rec = self.learn.recorder
        text = history_to_csv(rec.history)
        atomic_write(self.folder / "history.csv", lambda tmp: Path(tmp).write_text(text))
        data = {
            "history": rec.history,
            "batch_lr": rec.lrs,
            "batch_loss": rec.losses,
            "batches_per_epoch": self.learn.n_iter,
        }
        blob = json.dumps(data, allow_nan=True)
        atomic_write(self.folder / "history.json", lambda tmp: Path(tmp).write_text(blob))


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
        self.writer = None

    def before_fit(self) -> None:
        if self.learn.is_main:
            self.writer = self._writer_cls(self.log_dir)

    def after_batch(self) -> None:
        learn = self.learn
        if self.writer is None or not learn.training or getattr(learn, "batch_loss", None) is None:
            return
        self.writer.add_scalar("train/loss", float(learn.batch_loss), learn.train_iter)
        self.writer.add_scalar("train/lr", learn.opt.param_groups[0]["lr"], learn.train_iter)

    def after_epoch(self) -> None:
        if self.writer is None or not self.learn.recorder.history:
            return
        row = self.learn.recorder.history[-1]
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        self.writer.flush()

    def cleanup_fit(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 95  # after SaveCheckpoint (90): the last epoch is saved before stopping

    def __init__(self, monitor: str = "valid_loss", patience: int = 3, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.sign = -1.0 if "loss" in monitor else 1.0  # losses fall, accuracies rise
        self.best = -math.inf
        self.wait = 0

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
