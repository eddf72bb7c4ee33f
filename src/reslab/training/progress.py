"""tqdm bars for epochs and batches, and one summary line per epoch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from reslab.training.callback import Callback

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = [
    "ProgressCallback",
]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class ProgressCallback(Callback):
    """tqdm bars for epochs and batches (live loss and accuracy); one summary line per epoch.

    Only the main process (rank 0) draws. The bar counts every batch, but the loss (smoothed)
    and accuracy it shows are read from the device at most every ``refresh_s`` seconds, so
    the bar does not make the device wait for the host after every batch.
    """

    order = 60
    ebar: tqdm[Any] | None  # the epochs bar, on the main process while fitting
    bbar: tqdm[Any] | None  # the batches bar, while an epoch trains
    _smooth: float | None  # the bar's smoothed batch loss

    def __init__(self, refresh_s: float = 1.0) -> None:
        self.refresh_s = refresh_s

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
        self._smooth: float | None = None
        rec = getattr(learn, "recorder", None)
        self._read = len(rec.losses) if rec is not None else 0  # losses already shown
        self._shown = time.monotonic()
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
        if not self.learn.training or self.bbar is None:
            return
        now = time.monotonic()
        if now - self._shown >= self.refresh_s:
            self._shown = now
            self._show_values()
        self.bbar.update(1)

    def _show_values(self) -> None:
        rec = getattr(self.learn, "recorder", None)
        if rec is None:
            return
        rec.flush()
        for v in rec.losses[self._read :]:
            self._smooth = v if self._smooth is None else 0.9 * self._smooth + 0.1 * v
        self._read = len(rec.losses)
        post = {"loss": f"{self._smooth:.4f}"} if self._smooth is not None else {}
        if rec.running_accuracy is not None:
            post["acc"] = f"{rec.running_accuracy:.4f}"
        if self.bbar is not None:
            self.bbar.set_postfix(post, refresh=False)

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
