"""``blocks.png``: lesion accuracy and residual ratio per block, probe accuracy per stage."""

from __future__ import annotations

from pathlib import Path

from reslab.files import atomic_write

__all__ = ["plot_blocks"]


def plot_blocks(report: dict, path: str | Path, title: str = "") -> Path:
    """Three panels from :func:`~reslab.analysis.blocks.study_blocks`' result: test accuracy
    with each block removed (the dashed line: nothing removed; downsampling blocks hatched,
    plain blocks that change shape blank), each block's residual ratio, and each stage's probe
    accuracy."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    blocks = report["blocks"]
    names = [b["name"] for b in blocks]
    panels = 3 if report["stages"] else 2
    fig = Figure(figsize=(max(6.0, 0.28 * len(blocks) + 2) * (1 + 0.5 * (panels - 2)), 3.6),
                 layout="constrained")  # fmt: skip
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, width_ratios=[3, 3, 1.2][:panels])
    lesion = [100 * (b["lesion_accuracy"] or 0.0) for b in blocks]
    bars = axes[0].bar(range(len(blocks)), lesion, color="C0")
    for i, (bar, block) in enumerate(zip(bars, blocks)):
        if block["downsample"]:
            bar.set_hatch("//")
        if block["lesion_accuracy"] is None:  # a plain block that changes shape: not removable
            axes[0].text(i, 1, "skipped", rotation=90, ha="center", va="bottom", fontsize=6)
    axes[0].axhline(100 * report["base_accuracy"], ls="--", color="black", lw=1)
    axes[0].set_title("test accuracy with one block removed (%)", fontsize=9)
    ratios = [b["residual_ratio"] or 0.0 for b in blocks]
    axes[1].bar(range(len(blocks)), ratios, color="C1")
    axes[1].set_title("residual ratio ‖F(x)‖ / ‖x‖", fontsize=9)
    for ax in axes[:2]:
        ax.set_xticks(range(len(blocks)), names, rotation=90, fontsize=6)
    if report["stages"]:
        stages = report["stages"]
        axes[2].bar([s["name"] for s in stages], [100 * s["probe_accuracy"] for s in stages],
                    color="C2")  # fmt: skip
        axes[2].set_title("linear probe accuracy (%)", fontsize=9)
        axes[2].tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
