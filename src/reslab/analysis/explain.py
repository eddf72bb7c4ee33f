"""Explain one image: the model's top classes, each with its class activation map.

``explain(model, image, class_names)`` runs the model once for the probabilities and one
batched backward pass for the maps (the image repeated once per class), so asking for three
classes costs about one more forward and backward pass than asking for one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from reslab.analysis.gradcam import eval_mode, gradcam
from reslab.analysis.overlay import save_figure, show_image, show_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Explanation",
    "class_index",
    "explain",
    "explain_figure",
    "percent",
    "plot_explanation",
]


@dataclass(frozen=True)
class Explanation:
    """One image, the classes explained and their maps.

    ``image`` is the ``(C, H, W)`` 0–1 tensor the model took; ``classes`` holds
    ``(index, name, probability)`` per explained class, and ``maps[i]`` (``(H, W)`` in
    [0, 1]) is the map of ``classes[i]``.
    """

    image: Tensor
    classes: list[tuple[int, str, float]]
    maps: Tensor
    method: str
    layer: str | None

    @property
    def source(self) -> str:
        """The method and layer, e.g. ``"gradcam at layer4"``."""
        return f"{self.method} at {self.layer}" if self.layer else self.method


def class_index(name: str | int, class_names: Sequence[str]) -> int:
    """The index of a class given by name (exact, then case-insensitive) or by index."""
    names = [str(n) for n in class_names]
    if isinstance(name, str) and name in names:
        return names.index(name)
    if isinstance(name, int) or name.strip().isdigit():
        index = int(name)
        if not 0 <= index < len(names):
            raise ValueError(f"class index {index} out of range for {len(names)} classes")
        return index
    folded = [n.casefold() for n in names]
    if name.casefold() in folded:
        return folded.index(name.casefold())
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown class {name!r}{hint}")


def explain(
    model: nn.Module,
    image: Tensor,
    class_names: Sequence[str] | None = None,
    *,
    topk: int = 3,
    target: str | int | None = None,
    method: str = "gradcam",
    layer: str | None = None,
) -> Explanation:
    """The top-``topk`` classes of ``image`` (or the one ``target`` class) with their maps.

    Args:
        model: a classifier taking 0–1 images (its normalisation inside, as reslab models).
        image: ``(C, H, W)``, already resized/cropped for the model.
        class_names: names of the model's classes (default: their indices).
        topk: how many of the most probable classes to explain.
        target: explain this class (name or index) instead of the top ``topk``.
        method, layer: passed to :func:`~reslab.analysis.gradcam.gradcam`.
    """
    if image.dim() != 3:
        raise ValueError(f"expected one image of shape (C, H, W), got {tuple(image.shape)}")
    if topk < 1:
        raise ValueError(f"topk must be positive, got {topk}")
    with eval_mode(model), torch.no_grad():
        probs = model(image[None]).float().softmax(-1)[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(probs))]
    if len(names) != len(probs):
        raise ValueError(f"{len(names)} class names for a model with {len(probs)} classes")
    if target is not None:
        indices = [class_index(target, names)]
    else:
        indices = probs.topk(min(topk, len(probs))).indices.tolist()
    batch = image[None].expand(len(indices), *image.shape)
    maps = gradcam(model, batch, torch.tensor(indices), layer, method=method)
    classes = [(i, names[i], float(probs[i])) for i in indices]
    if layer is None and method != "saliency":
        layer = (getattr(model, "stage_names", None) or [None])[-1]
    return Explanation(image.detach().cpu(), classes, maps.detach().cpu(), method, layer)


def explain_figure(
    explanation: Explanation, *, title: str | None = None, alpha: float = 0.45, cmap: str = "jet"
) -> Figure:
    """A matplotlib ``Figure``: the image, then one panel per class with its map over it,
    titled with the class name and probability."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    panels = 1 + len(explanation.classes)
    fig = Figure(figsize=(2.8 * panels, 3.2), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    show_image(axes[0], explanation.image)
    axes[0].set_title("input", fontsize=9)
    for ax, (_, name, prob), cam in zip(axes[1:], explanation.classes, explanation.maps):
        show_map(ax, explanation.image, cam, alpha=alpha, cmap=cmap)
        ax.set_title(f"{_shorten(name)}\n{percent(prob)}", fontsize=9)
    fig.suptitle(title or explanation.source, fontsize=10)
    return fig


def plot_explanation(explanation: Explanation, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`explain_figure` as a PNG, atomically; ``kwargs`` go to it."""
    return save_figure(explain_figure(explanation, **kwargs), path)


def percent(prob: float) -> str:
    """A probability as a percentage: one decimal, or one significant digit below 0.1 %."""
    return f"{100 * prob:.1f}%" if prob >= 0.001 else f"{100 * prob:.1g}%"


def _shorten(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
