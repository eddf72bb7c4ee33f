"""Decision regions of a classifier head over 2-D slices of its input space.

A slice is the plane ``origin + a * u + b * v``; the head is evaluated on a grid over
``a, b`` in ``[-extent, extent]`` and each point is coloured by its top-1 class. A bias-free
linear head (and any positively homogeneous head, e.g. a ReLU MLP without biases) gives
*sectors*: scaling an input by a positive factor scales every logit by it, so the class depends
only on the direction. :func:`cone_disagreement` measures how far a head is from that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from reslab.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Plane",
    "axis_planes",
    "cone_disagreement",
    "decision_map",
    "example_planes",
    "head_in_features",
    "plot_decision_regions",
]

# Points evaluated per chunk are capped so the grid never needs more than this many floats.
_CHUNK_FLOATS = 1 << 24


class Plane(NamedTuple):
    """The slice ``origin + a * u + b * v`` of a head's input space, with a panel label.

    ``marks`` are ``(a, b)`` points drawn as white dots (e.g. the examples spanning the slice).
    """

    origin: Tensor
    u: Tensor
    v: Tensor
    label: str
    marks: tuple[tuple[float, float], ...] = ()


def head_in_features(head: nn.Module) -> int:
    """Input width of a head: the ``in_features`` of its first linear layer."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ValueError(f"{type(head).__name__} has no linear layer; pass explicit planes")


def axis_planes(
    dim: int, pairs: Sequence[tuple[int, int]], origin: Tensor | None = None
) -> list[Plane]:
    """Slices along pairs of coordinate axes ``(i, j)`` through ``origin`` (default 0)."""
    origin = torch.zeros(dim) if origin is None else origin.detach().flatten().float()
    planes = []
    for i, j in pairs:
        if not (0 <= i < dim and 0 <= j < dim) or i == j:
            raise ValueError(f"axis pair ({i}, {j}) is not two distinct dims of {dim}")
        u, v = torch.zeros(dim), torch.zeros(dim)
        u[i], v[j] = 1.0, 1.0
        planes.append(Plane(origin, u, v, f"dims {i}, {j}"))
    return planes


def example_planes(examples: Tensor, labels: Sequence[str] | None = None) -> list[Plane]:
    """Slices through 0 spanned by consecutive pairs of examples: ``(x0, x1), (x2, x3), …``.

    ``(1, 0)`` is the first example, ``(0, 1)`` the second (both marked), and the ray through
    each is that example scaled (``(0.5, 0)`` is it at half brightness, for images).
    """
    flat = examples.detach().flatten(1).float()
    if len(flat) < 2:
        raise ValueError("need at least two examples to span a plane")
    planes = []
    for k in range(len(flat) // 2):
        a, b = 2 * k, 2 * k + 1
        name = f"{labels[a]} / {labels[b]}" if labels else f"x{a} / x{b}"
        planes.append(
            Plane(torch.zeros_like(flat[a]), flat[a], flat[b], name, ((1.0, 0.0), (0.0, 1.0)))
        )
    return planes


def _grid(extent: float, resolution: int) -> tuple[Tensor, Tensor]:
    ticks = torch.linspace(-extent, extent, resolution)
    b, a = torch.meshgrid(ticks, ticks, indexing="ij")  # row index is b (the vertical axis)
    return a.flatten(), b.flatten()


@torch.no_grad()
def _classify(head: nn.Module, plane: Plane, a: Tensor, b: Tensor) -> Tensor:
    # Eval mode (no dropout) for the evaluation only; the caller's mode is restored.
    was_training = head.training
    head.eval()
    try:
        return _classify_eval(head, plane, a, b)
    finally:
        head.train(was_training)


def _classify_eval(head: nn.Module, plane: Plane, a: Tensor, b: Tensor) -> Tensor:
    param = next(head.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    origin, u, v = (t.to(device, dtype) for t in plane[:3])
    chunk = max(1, _CHUNK_FLOATS // max(1, origin.numel()))
    out = []
    for start in range(0, a.numel(), chunk):
        ca = a[start : start + chunk].to(device, dtype)[:, None]
        cb = b[start : start + chunk].to(device, dtype)[:, None]
        out.append(head(origin + ca * u + cb * v).argmax(1).cpu())
    return torch.cat(out)


def _default_plane(head: nn.Module, plane: Plane | None) -> Plane:
    if plane is not None:
        return plane
    dim = head_in_features(head)
    if dim != 2:
        raise ValueError(f"the head takes {dim}-d inputs: pass a 2-D slice (a Plane)")
    return axis_planes(2, [(0, 1)])[0]


def decision_map(
    head: nn.Module, plane: Plane | None = None, *, extent: float = 1.0, resolution: int = 200
) -> Tensor:
    """Top-1 class on a ``resolution x resolution`` grid over the slice.

    Row ``r`` is ``b = -extent + 2 * extent * r / (resolution - 1)`` (bottom to top), column
    ``c`` the same for ``a``. The head runs in eval mode (no dropout); its mode is restored.

    Args:
        head: maps ``(N, dim)`` inputs to ``(N, classes)`` scores.
        plane: the slice; ``None`` for a head on 2-D inputs (the whole input plane).
        extent: half-width of the square in slice coordinates.
        resolution: grid points per side.
    """
    plane = _default_plane(head, plane)
    a, b = _grid(extent, resolution)
    return _classify(head, plane, a, b).view(resolution, resolution)


def cone_disagreement(
    head: nn.Module, plane: Plane | None = None, *, extent: float = 1.0, resolution: int = 100
) -> float:
    """Fraction of the slice whose class differs from the class further out along its ray.

    Each grid point ``p`` is compared with ``origin + R * d`` where ``d`` is ``p``'s direction
    in the slice and ``R`` is the corner radius. 0 means the regions are exact sectors
    (cones) around the origin, as for a bias-free linear head; curved boundaries and regions
    that do not reach the origin give larger values.
    """
    plane = _default_plane(head, plane)
    a, b = _grid(extent, resolution)
    radius = torch.sqrt(a**2 + b**2)
    keep = radius > 0
    a, b, radius = a[keep], b[keep], radius[keep]
    far = extent * 2**0.5 / radius
    near = _classify(head, plane, a, b)
    out = _classify(head, plane, a * far, b * far)
    return float((near != out).float().mean())


def _class_colors(num_classes: int):
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    tab = colormaps["tab10" if num_classes <= 10 else "tab20"]
    if num_classes <= 20:
        assert isinstance(tab, ListedColormap)  # matplotlib's tab10/tab20 are lists of colours
        colors = np.asarray(tab.colors)[:num_classes]
    else:  # many classes: distinct hues, no legend
        colors = colormaps["hsv"](torch.linspace(0, 1, num_classes + 1)[:-1].numpy())
    return ListedColormap(colors)


def plot_decision_regions(
    heads: nn.Module | Mapping[str, nn.Module],
    planes: Sequence[Plane] | None = None,
    *,
    extent: float = 1.0,
    resolution: int = 150,
    ncols: int = 8,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    panel_size: float = 1.3,
    path: str | Path | None = None,
) -> Figure:
    """Draw the top-1 regions of one or more heads on the same slices; optionally save a PNG.

    Each head gets a block of panels (one per plane) under its name; a class keeps its
    colour across all panels. Returns the matplotlib ``Figure`` (drawn without pyplot, so no
    global state or display backend is touched).

    Args:
        heads: a head, or ``{name: head}`` to compare heads (e.g. trained vs untrained).
        planes: the slices; ``None`` for heads on 2-D inputs.
        extent: half-width of each panel in slice coordinates.
        resolution: grid points per panel side.
        ncols: panels per row.
        num_classes: colours to allocate (default: the last layer's outputs).
        class_names: legend labels (shown for up to 20 classes).
        title: figure title.
        panel_size: inches per panel.
        path: write the figure here as PNG (parent folders are created).
    """
    from matplotlib.patches import Patch

    if isinstance(heads, nn.Module):
        heads = {"": heads}
    if not heads:
        raise ValueError("no heads to plot")
    first = next(iter(heads.values()))
    planes = list(planes) if planes is not None else [_default_plane(first, None)]
    if num_classes is None:
        num_classes = [m for m in first.modules() if isinstance(m, nn.Linear)][-1].out_features
    cmap = _class_colors(num_classes)
    ncols = max(1, min(ncols, len(planes)))
    nrows = -(-len(planes) // ncols)
    legend = class_names is not None and num_classes <= 20
    fig, rows, subfigs = _figure(len(heads), any(heads), len(planes), nrows, ncols, panel_size,
                                 bool(title), legend)  # fmt: skip
    for subfig, (name, head) in zip(subfigs, heads.items()):
        if name:
            subfig.suptitle(name, fontsize=10)
        axes = subfig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.flat[len(planes) :]:
            ax.set_axis_off()
        for ax, plane in zip(axes.flat, planes):
            classes = decision_map(head, plane, extent=extent, resolution=resolution)
            _draw_panel(ax, classes, plane, extent, cmap, num_classes)
            if len(planes) > 1 or plane.label != "dims 0, 1":
                ax.set_title(plane.label, fontsize=7, pad=2)
    if title:
        fig.suptitle(title, fontsize=11)
    if legend and class_names is not None:  # (legend implies class names)
        handles = [Patch(color=cmap(i), label=class_names[i]) for i in range(num_classes)]
        rows[1].legend(
            handles=handles,
            loc="center",
            ncol=min(5, num_classes),
            fontsize=7,
            frameon=False,
        )
    if path is not None:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    return fig


def _figure(n_heads, named, n_planes, nrows, ncols, panel_size, titled, legend):
    """The figure: one block of panels per head (stacked, or side by side when each block is
    one panel), and a strip for the legend below, so it can never be clipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    side_by_side = n_planes == 1
    block_w = ncols * panel_size
    block_h = nrows * panel_size + (0.35 if named else 0.1)
    width = block_w * (n_heads if side_by_side else 1)
    height = block_h * (1 if side_by_side else n_heads)
    fig = Figure(
        figsize=(width, height + (0.5 if titled else 0) + legend * 0.6), layout="constrained"
    )
    FigureCanvasAgg(fig)
    rows = fig.subfigures(
        2 if legend else 1, 1, squeeze=False, height_ratios=[height, 0.6] if legend else None
    )[:, 0]
    grid = (1, n_heads) if side_by_side else (n_heads, 1)
    return fig, rows, rows[0].subfigures(*grid, squeeze=False).flatten()


def _draw_panel(ax, classes: Tensor, plane: Plane, extent: float, cmap, num_classes: int) -> None:
    """One slice: the class map, the origin (+) and the plane's marked inputs (o)."""
    ax.imshow(
        classes.numpy(),
        cmap=cmap,
        vmin=-0.5,
        vmax=num_classes - 0.5,
        origin="lower",
        extent=(-extent, extent, -extent, extent),
        interpolation="nearest",
    )
    ax.plot([0], [0], marker="+", color="black", markersize=5)
    for a, b in plane.marks:
        ax.plot(
            [a],
            [b],
            marker="o",
            markersize=3,
            markerfacecolor="white",
            markeredgecolor="black",
            markeredgewidth=0.5,
        )
    ax.set_xticks([])
    ax.set_yticks([])
