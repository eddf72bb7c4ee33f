"""``landscape.png`` and ``landscape.json``: loss landscapes side by side (one row per depth, one
column per arm for an experiment), 1-D as curves of loss and accuracy, 2-D as contours with
log-spaced levels shared by every panel, as in Li et al.'s figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reslab.files import atomic_write

__all__ = ["arrange", "landscape_figure", "plot_landscapes"]

CONTOUR_LEVELS = 16  # log-spaced levels between the smallest and the largest loss shown
LOSS_CAP = 20.0  # losses above this (far from a minimum) are drawn at the cap


def arrange(entries: list[dict[str, Any]]) -> list[list[dict[str, Any] | None]]:
    """Entries in rows and columns: with ``arm`` and ``depth`` labels, one row per depth and
    one column per arm (first-seen order); otherwise one row."""
    if not entries or any("arm" not in e or "depth" not in e for e in entries):
        return [list(entries)]
    arms = list(dict.fromkeys(e["arm"] for e in entries))
    depths = sorted({e["depth"] for e in entries})
    cell = {(e["depth"], e["arm"]): e for e in entries}
    return [[cell.get((d, a)) for a in arms] for d in depths]


def _title(entry: dict[str, Any]) -> str:
    title = entry.get("label", "")
    hessian = entry.get("hessian")
    if hessian and hessian.get("eigenvalues"):
        title += f"\nλmax {hessian['eigenvalues'][0]:.3g}"
        if hessian.get("trace") is not None:
            title += f", trace {hessian['trace']:.3g}"
    return title


def _curve(ax, result: dict[str, Any], top: float) -> None:
    alphas = result["alphas"]
    loss = np.minimum(np.asarray(result["loss"], dtype=float), LOSS_CAP)
    ax.plot(alphas, loss, color="C0", lw=1.8, label="loss")
    ax.set_ylim(0, top)
    ax.set_xlabel("α (filter-normalised direction)")
    twin = ax.twinx()
    twin.plot(alphas, 100 * np.asarray(result["accuracy"]), "--", color="C3", lw=1.2)
    twin.set_ylim(0, 100)
    twin.tick_params(axis="y", colors="C3", labelsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _contour(ax, result: dict[str, Any], levels: np.ndarray):
    from matplotlib.colors import LogNorm

    z = np.minimum(np.asarray(result["loss"], dtype=float), LOSS_CAP).T  # rows: betas
    a, b = np.meshgrid(result["alphas"], result["betas"])
    filled = ax.contourf(
        a, b, z, levels=levels, norm=LogNorm(levels[0], levels[-1]), cmap="viridis", extend="both"
    )
    ax.contour(a, b, z, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
    ax.plot([0], [0], "+", color="red", ms=8)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    return filled


def _loss_range(results: list[dict[str, Any]]) -> tuple[float, float]:
    values = np.concatenate([np.ravel(np.asarray(r["loss"], dtype=float)) for r in results])
    values = values[np.isfinite(values)]
    low = max(float(values.min()) if len(values) else 1e-3, 1e-3)
    high = min(float(values.max()) if len(values) else 1.0, LOSS_CAP)
    return low, max(high, low * 1.01)


def landscape_figure(entries: list[dict[str, Any]], title: str = ""):
    """Every entry's ``result`` (a :class:`~reslab.analysis.landscape.Landscape` as a dict)
    in a grid from :func:`arrange`; the same y range (1-D) or contour levels (2-D) in every
    panel, so the panels compare. Returns a matplotlib figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = arrange(entries)
    results = [e["result"] for e in entries]
    dims = {r["dims"] for r in results}
    if len(dims) != 1:
        raise ValueError("cannot draw 1-D and 2-D landscapes in one figure")
    two_d = dims.pop() == 2
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    size = (3.6 * n_cols + (0.8 if two_d else 0), 3.3 * n_rows + 0.5)
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    low, high = _loss_range(results)
    levels = np.geomspace(low, high, CONTOUR_LEVELS)
    top = min(LOSS_CAP, 1.05 * high)
    filled = None
    for row_axes, row in zip(axes, rows):
        for ax, entry in zip(row_axes, row + [None] * (n_cols - len(row))):
            if entry is None:
                ax.set_axis_off()
                continue
            if two_d:
                filled = _contour(ax, entry["result"], levels)
            else:
                _curve(ax, entry["result"], top)
            ax.set_title(_title(entry), fontsize=8)
    if filled is not None:
        bar = fig.colorbar(filled, ax=axes, shrink=0.8)
        bar.set_label("loss (log-spaced levels)", fontsize=8)
    elif not two_d:
        axes[0][0].set_ylabel("loss (solid)", fontsize=8)
        axes[0][-1].text(
            1.12,
            0.5,
            "accuracy % (dashed)",
            rotation=90,
            color="C3",
            transform=axes[0][-1].transAxes,
            va="center",
            fontsize=8,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_landscapes(entries: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """:func:`landscape_figure` written to ``path`` as PNG (atomically)."""
    fig = landscape_figure(entries, title)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
