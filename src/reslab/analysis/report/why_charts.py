"""The lesion figure of a degradation experiment's page: per depth, the test accuracy with
each block removed, one line per arm."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["lesions_figure"]


def lesions_figure(found: list[tuple[dict[str, Any], dict[str, Any]]]):
    """``found``: ``(run, blocks.json)`` pairs (``run`` has ``arm``, ``depth``, ``seed``).
    One panel per depth; per arm the lesion accuracy (%) of its first seed's run against the
    block, its unlesioned accuracy dashed in the same colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    depths = sorted({run["depth"] for run, _ in found})
    arms = list(dict.fromkeys(run["arm"] for run, _ in found))
    fig = Figure(figsize=(max(6.0, 4.6 * len(depths)), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(depths), squeeze=False, sharey=True)[0]
    for ax, depth in zip(axes, depths):
        for i, arm in enumerate(arms):
            runs = sorted(
                (r for r in found if r[0]["arm"] == arm and r[0]["depth"] == depth),
                key=lambda r: r[0]["seed"],
            )
            if not runs:
                continue
            run, report = runs[0]
            accuracy = [
                np.nan if b["lesion_accuracy"] is None else 100 * b["lesion_accuracy"]
                for b in report["blocks"]
            ]
            ax.plot(accuracy, "o-", ms=3, color=f"C{i}", label=f"{arm} (seed {run['seed']})")
            ax.axhline(100 * report["base_accuracy"], ls="--", lw=1, color=f"C{i}")
        ax.set_title(f"depth {depth}", fontsize=9)
        ax.set_xlabel("block removed (input → output)", fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test accuracy (%)", fontsize=8)
    return fig
