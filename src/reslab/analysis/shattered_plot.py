"""``gradients.json`` and ``gradients.png``: shattered-gradient measurements summarised over
seeds (mean ± std per arm, depth and weights) and drawn in the style of Balduzzi et al.'s
figures: the derivative along the line per network (white noise for a shattered network,
a smooth walk otherwise), the autocorrelation against the lag, the lag-1 correlation against
depth and the gradient norm block by block."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reslab.files import atomic_write

__all__ = [
    "gradients_figure",
    "plot_gradients",
    "summarize_gradients",
]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _group_key(entry: dict[str, Any]) -> tuple:
    return (entry.get("arm", entry.get("label")), entry.get("depth"), entry.get("weights"))


def summarize_gradients(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (arm, depth, weights): the number of seeds, mean ± std of the lag-1
    correlation and of the correlation length (null where it exceeded the lags measured; such
    runs are counted in ``beyond_max_lag``), and the mean ± std autocorrelation curve."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        groups[_group_key(entry)].append(entry)
    rows = []
    for (arm, depth, weights), group in groups.items():
        results = [e["result"] for e in group]
        lag1 = _mean_std([r["lag1"] for r in results])
        finite = [r["correlation_length"] for r in results if r["correlation_length"] is not None]
        length = _mean_std(finite)
        acfs = np.asarray([r["acf"] for r in results], dtype=float)
        rows.append(
            {
                "arm": arm,
                "depth": depth,
                "weights": weights,
                "n": len(group),
                "lag1_mean": lag1[0],
                "lag1_std": lag1[1],
                "correlation_length_mean": length[0],
                "correlation_length_std": length[1],
                "beyond_max_lag": len(results) - len(finite),
                "acf_mean": acfs.mean(0).tolist(),
                "acf_std": acfs.std(0).tolist(),
            }
        )
    return rows


def _colors(summary: list[dict[str, Any]]) -> dict[tuple, Any]:
    keys = list(dict.fromkeys((r["arm"], r["depth"]) for r in summary))
    arms = list(dict.fromkeys(k[0] for k in keys))
    depths = sorted({k[1] for k in keys if k[1] is not None})
    maps = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys")
    from matplotlib import colormaps

    out = {}
    for key in keys:
        cmap = colormaps[maps[arms.index(key[0]) % len(maps)]]
        shade = 0.45 + 0.5 * (depths.index(key[1]) + 1) / len(depths) if key[1] in depths else 0.8
        out[key] = cmap(min(shade, 0.95))
    return out


def _derivatives(fig, report: dict[str, Any], colors) -> None:
    first = report["entries"][0].get("seed", 0)
    entries = [e for e in report["entries"] if e.get("seed", 0) == first]
    depths = list(dict.fromkeys(e.get("depth") for e in entries))
    axes = fig.subplots(1, len(depths), squeeze=False)[0]
    for ax, depth in zip(axes, depths):
        shown = [e for e in entries if e.get("depth") == depth]
        for offset, entry in enumerate(shown):
            d = np.asarray(entry["result"]["derivative"], dtype=float)
            d = d / max(float(np.abs(d).max()), 1e-30)
            label = f"{entry.get('arm', entry.get('label'))} ({entry.get('weights', '')})"
            ax.plot(
                d - 2.2 * offset, color=colors[(_group_key(entry)[0], depth)], lw=0.8, label=label
            )
        ax.set_title(f"depth {depth}: d f(x(t)) / dt" if depth else "d f(x(t)) / dt", fontsize=9)
        ax.set_yticks([])
        ax.set_xlabel("point along the line", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")


def gradients_figure(report: dict[str, Any], title: str = ""):
    """A matplotlib figure of ``gradients.json``'s content. Top row: the derivative along
    the line of each network (first seed; each scaled to its largest value and stacked).
    Bottom row: autocorrelation against lag (mean ± std over seeds), lag-1 correlation
    against depth, and the gradient norm with respect to each block's output relative to
    the last block's (first seed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = report["summary"]
    colors = _colors(summary)
    depths = list(dict.fromkeys(e.get("depth") for e in report["entries"]))
    fig = Figure(figsize=(max(11.0, 3.7 * len(depths)), 7.2), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1)  # type: ignore[misc]
    _derivatives(top, report, colors)
    acf_ax, lag_ax, norm_ax = bottom.subplots(1, 3)
    for row in summary:
        color = colors[(row["arm"], row["depth"])]
        mean, std = np.asarray(row["acf_mean"]), np.asarray(row["acf_std"])
        lags = np.arange(len(mean))
        label = f"{row['arm']}-{row['depth']}" if row["depth"] else str(row["arm"])
        acf_ax.plot(lags, mean, color=color, label=f"{label} ({row['weights']})")
        acf_ax.fill_between(lags, mean - std, mean + std, color=color, alpha=0.2)
    acf_ax.axhline(np.exp(-1), ls=":", color="black", lw=0.8)
    acf_ax.set(xlabel="lag (points)", ylabel="autocorrelation", ylim=(-0.2, 1.02))
    acf_ax.set_title("autocorrelation of ∂f/∂x along the line", fontsize=9)
    acf_ax.legend(fontsize=6)
    for (arm, weights), rows in _by_arm(summary).items():
        rows = [r for r in rows if r["depth"] is not None]
        if rows:
            lag_ax.errorbar(
                [r["depth"] for r in rows],
                [r["lag1_mean"] for r in rows],
                yerr=[r["lag1_std"] for r in rows],
                marker="o",
                capsize=3,
                color=colors[(arm, rows[-1]["depth"])],
                label=f"{arm} ({weights})",
            )
    lag_ax.set(xlabel="depth (layers)", ylabel="lag-1 correlation", ylim=(-0.1, 1.05))
    lag_ax.set_title("lag-1 correlation (mean ± std over seeds)", fontsize=9)
    lag_ax.legend(fontsize=6)
    _block_norms(norm_ax, report, colors)
    for ax in (acf_ax, lag_ax, norm_ax):
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_gradients(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """:func:`gradients_figure` written to ``path`` as PNG (atomically)."""
    fig = gradients_figure(report, title)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _by_arm(summary: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(summary, key=lambda r: (str(r["arm"]), r["depth"] or 0)):
        out[(row["arm"], row["weights"])].append(row)
    return out


def _block_norms(ax, report: dict[str, Any], colors) -> None:
    first = report["entries"][0].get("seed", 0)
    for entry in report["entries"]:
        norms = list(entry["result"]["block_grad_norms"].values())
        if entry.get("seed", 0) != first or not norms:
            continue
        relative = np.asarray(norms) / max(norms[-1], 1e-30)
        position = np.linspace(0, 1, len(relative))
        key = (_group_key(entry)[0], entry.get("depth"))
        ax.plot(
            position,
            relative,
            color=colors[key],
            lw=1.2,
            label=f"{key[0]}-{key[1]} ({entry.get('weights', '')})",
        )
    ax.set_yscale("log")
    ax.set(xlabel="block (input → output, relative position)", ylabel="‖∂f/∂h‖ / last block's")
    ax.set_title("gradient norm per block", fontsize=9)
    ax.legend(fontsize=6)
