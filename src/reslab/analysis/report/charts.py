"""The report's pictures, drawn fresh: training curves, the confusion matrix, top-loss tiles."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from reslab.analysis.overlay import heat_overlay, image_array
from reslab.analysis.report.embed import array_png
from reslab.analysis.report.facts import RunFacts
from reslab.analysis.top_losses import TopLoss
from reslab.training.plots import plot_confusion

__all__ = ["confusion_png", "curves_figure", "top_loss_tile"]

ACCURACY_KEYS = ("accuracy", "top5", "valid_accuracy")


def _smooth(values: Sequence[float], beta: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (as fastai's recorder)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return np.asarray(out)


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in history if isinstance(r.get(key), int | float) and "epoch" in r]
    return [float(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def _batch_x(n: int, per_epoch: int | None) -> np.ndarray:
    return (np.arange(n) + 1) / per_epoch if per_epoch else np.arange(1, n + 1)


def curves_figure(facts: RunFacts):
    """Loss (per batch, smoothed, and per epoch), validation accuracy and learning rate."""
    from matplotlib.figure import Figure

    if not facts.history and not facts.batch_loss:
        raise ValueError("no training history recorded")
    fig = Figure(figsize=(12, 3.4))
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    unit = "epoch" if facts.batches_per_epoch or not facts.batch_loss else "batch"
    if facts.batch_loss:
        x = _batch_x(len(facts.batch_loss), facts.batches_per_epoch)
        loss_ax.plot(x, facts.batch_loss, color="C0", alpha=0.2, lw=0.8)
        loss_ax.plot(x, _smooth(facts.batch_loss), color="C0", label="train (batches, smoothed)")
    for key, style in (("train_loss", "o-"), ("valid_loss", "s-")):
        epochs, values = _series(facts.history, key)
        if values:
            loss_ax.plot(epochs, values, style, ms=4, label=key.replace("_", " "))
    for key in ACCURACY_KEYS:
        epochs, values = _series(facts.history, key)
        if values:
            acc_ax.plot(epochs, values, "o-", ms=4, label=key.replace("_", " "))
    if facts.batch_lr:
        lr_ax.plot(_batch_x(len(facts.batch_lr), facts.batches_per_epoch), facts.batch_lr)
    else:
        epochs, values = _series(facts.history, "lr")
        lr_ax.plot(epochs, values, "o-", ms=4)
    titles = ("loss", "validation accuracy", "learning rate")
    for ax, title in zip((loss_ax, acc_ax, lr_ax), titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(unit)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_png(confusion: Tensor, class_names: Sequence[str], title: str) -> bytes:
    """The confusion matrix as drawn by ``reslab eval`` (rows true, columns predicted)."""
    with tempfile.TemporaryDirectory(prefix="reslab-report-") as tmp:
        path = plot_confusion(confusion, class_names, Path(tmp) / "figure.png", title=title)
        return path.read_bytes()


def top_loss_tile(item: TopLoss, *, min_side: int = 112, max_side: int = 160) -> bytes:
    """The image and the same image under its class map, side by side, as PNG bytes
    (small images enlarged, large ones shrunk, so the page stays light)."""
    plain = (image_array(item.image) * 255).round().astype(np.uint8)
    overlay = heat_overlay(item.image, item.cam)
    gap = np.full((plain.shape[0], max(1, plain.shape[1] // 16), 3), 255, np.uint8)
    tile = np.concatenate([plain, gap, overlay], axis=1)
    return array_png(tile, min_side=min_side, max_side=max_side)
