"""The figures of ``reslab analyze explanations``: the deletion and insertion curves with
the randomisation cascade's correlations (from ``explanations.json`` alone, so a report
can redraw them), and the maps of one image along the cascade."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from reslab.analysis.explanations import BASELINE_MAPS, RANDOM, RandomizationCheck
from reslab.analysis.overlay import save_figure, show_image, show_map

__all__ = ["cascade_figure", "explanations_figure", "plot_cascade", "plot_explanations"]


def _style(method: str, i: int) -> dict[str, Any]:
    if method in BASELINE_MAPS:
        return {"color": "grey" if method == RANDOM else "black", "ls": "--", "lw": 1.1}
    return {"color": f"C{i}", "lw": 1.6}


def _curves_panel(ax, faith: dict[str, Any], kind: str) -> None:
    x = [100 * f for f in faith["fractions"]]
    for i, method in enumerate(faith["methods"]):
        record = faith[kind][method]
        auc = record["auc"]
        label = f"{method}: AUC {auc['mean']:.3f} ± {auc['std']:.3f}"
        ax.plot(x, record["curve_mean"], label=label, **_style(method, i))
    verb = "removed" if kind == "deletion" else "revealed"
    better = "lower" if kind == "deletion" else "higher"
    ax.set_title(f"{kind} ({better} AUC is better)", fontsize=9)
    ax.set_xlabel(f"pixels {verb}, most relevant first (%)", fontsize=8)
    ax.set_ylabel("probability of the class", fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper right" if kind == "deletion" else "lower right")


def _cascade_panel(ax, rand: dict[str, Any]) -> None:
    labels = ["trained", *(f"+ {s['randomized']}" for s in rand["steps"])]
    x = list(range(len(labels)))
    for i, method in enumerate(rand["methods"]):
        mean = [1.0, *(s["correlation"][method]["mean"] for s in rand["steps"])]
        std = [0.0, *(s["correlation"][method]["std"] for s in rand["steps"])]
        flagged = " (flagged)" if method in rand["flagged"] else ""
        ax.plot(x, mean, marker="o", ms=3, color=f"C{i}", label=method + flagged)
        low = [m - s for m, s in zip(mean, std)]
        high = [m + s for m, s in zip(mean, std)]
        ax.fill_between(x, low, high, color=f"C{i}", alpha=0.12, lw=0)
    ax.axhline(rand["flag_threshold"], color="black", ls=":", lw=1)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(-0.3, 1.05)
    ax.set_title("randomised from the head down", fontsize=9)
    ax.set_ylabel("rank correlation with the trained map", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")


def explanations_figure(report: dict[str, Any], *, title: str | None = None):
    """A matplotlib ``Figure`` from an ``explanations.json`` dict: the deletion and
    insertion curves (mean over images; the AUCs, mean ± std, in the legend) and
    the mean rank correlation along the randomisation cascade (dotted: the flag line)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    faith, rand = report.get("faithfulness"), report.get("randomization")
    panels = (2 if faith else 0) + (1 if rand else 0)
    if not panels:
        raise ValueError("the report has neither faithfulness curves nor a randomisation check")
    fig = Figure(figsize=(4.2 * panels, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if faith:
        _curves_panel(axes.pop(0), faith, "deletion")
        _curves_panel(axes.pop(0), faith, "insertion")
    if rand:
        _cascade_panel(axes.pop(0), rand)
    fig.suptitle(title or _default_title(report), fontsize=10)
    return fig


def _default_title(report: dict[str, Any]) -> str:
    about = [str(report[k]) for k in ("model", "data") if report.get(k)]
    faith = report.get("faithfulness") or report.get("randomization") or {}
    images = f"{faith.get('images')} images" if faith.get("images") else ""
    return " · ".join([*about, images]) if about or images else "explanations"


def plot_explanations(report: dict[str, Any], path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`explanations_figure` as a PNG, atomically."""
    return save_figure(explanations_figure(report, **kwargs), path)


def cascade_figure(
    check: RandomizationCheck,
    image: Tensor,
    *,
    index: int = 0,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
):
    """One image's maps along the cascade, as in Adebayo et al.'s figures: a row per method,
    a column per step (the trained model's map first); the input in the first column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = ["trained", *(f"+ {label}" for label, _ in check.stages)]
    rows, cols = len(check.methods), len(steps) + 1
    fig = Figure(figsize=(1.5 * cols, 1.6 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, method in enumerate(check.methods):
        axes[r][0].axis("off")
        for c, step in enumerate(steps):
            ax = axes[r][c + 1]
            show_map(ax, image, check.maps[method][c, index])
            if r == 0:
                ax.set_title(step, fontsize=7)
        axes[r][1].text(-0.08, 0.5, method, transform=axes[r][1].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)  # fmt: skip
    show_image(axes[0][0], image)
    target = int(check.target[index])
    name = class_names[target] if class_names is not None else str(target)
    axes[0][0].set_title(f"input; class: {name}", fontsize=7)
    fig.suptitle(title or "maps as the model is randomised from the head down", fontsize=9)
    return fig


def plot_cascade(check: RandomizationCheck, image: Tensor, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`cascade_figure` as a PNG, atomically."""
    return save_figure(cascade_figure(check, image, **kwargs), path)
