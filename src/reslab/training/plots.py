"""Figures of a run: training curves, the LR finder, the LR schedule, a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from reslab.files import atomic_write

__all__ = [
    "format_confusion",
    "plot_confusion",
    "plot_history",
    "plot_lr_find",
    "plot_lr_schedule",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    _plt().close(fig)
    return out


def plot_history(history: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Loss (train and valid) and the accuracy metrics per epoch, side by side."""
    if not history:
        raise ValueError("no epochs recorded yet: nothing to plot")
    plt = _plt()
    epochs = [row["epoch"] for row in history]
    metrics = [k for k in history[-1] if k in ("accuracy", "top5") or k.startswith("top")]
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5, 3.6))
    axes = list(axes) if metrics else [axes]
    for key, style in (("train_loss", "-o"), ("valid_loss", "-s")):
        if any(key in row for row in history):
            axes[0].plot(
                epochs,
                [row.get(key, float("nan")) for row in history],
                style,
                label=key.replace("_", " "),
                ms=3,
            )
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if metrics:
        for key in metrics:
            axes[1].plot(
                epochs, [row.get(key, float("nan")) for row in history], "-o", label=key, ms=3
            )
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("validation")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_lr_find(
    lrs: Sequence[float], losses: Sequence[float], suggestion: float | None, out: str | Path
) -> Path:
    """Smoothed loss against learning rate (log scale), with the suggested LR marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    if suggestion:
        ax.axvline(suggestion, color="C3", ls="--", label=f"suggested {suggestion:.2e}")
        ax.legend()
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)


def plot_lr_schedule(lrs: Sequence[float], batches_per_epoch: int, out: str | Path) -> Path:
    """The learning rate of every training batch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = [i / max(1, batches_per_epoch) for i in range(len(lrs))]
    ax.plot(x, lrs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_confusion(
    confusion: Tensor, class_names: Sequence[str] | None, out: str | Path, title: str = ""
) -> Path:
    """A confusion matrix (rows: true class, columns: predicted), counts written in cells."""
    plt = _plt()
    k = confusion.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        top = int(confusion.max()) or 1
        for i in range(k):
            for j in range(k):
                v = int(confusion[i, j])
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > top / 2 else "black",
                )
    if title:
        ax.set_title(title)
    return _save(fig, out)


def format_confusion(confusion, names: list[str]) -> str:
    """A plain-text confusion matrix: rows true class, columns predicted class."""
    k = confusion.shape[0]
    width = max(5, len(str(int(confusion.max()))) + 1)
    label_w = min(14, max(len(n) for n in names))
    head = " " * (label_w + 1) + "".join(f"{n[: width - 1]:>{width}}" for n in names)
    rows = [head]
    for i in range(k):
        cells = "".join(f"{int(v):>{width}}" for v in confusion[i])
        rows.append(f"{names[i][:label_w]:<{label_w}} {cells}")
    return "\n".join(rows)
