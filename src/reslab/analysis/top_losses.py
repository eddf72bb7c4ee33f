"""Top losses: the samples a classifier gets most confidently wrong, with where it looked."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reslab.analysis.gradcam import eval_mode, gradcam
from reslab.analysis.overlay import save_figure, show_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TopLoss", "plot_top_losses", "top_losses", "top_losses_figure", "top_losses_records"]

Data = Iterable[Sequence[Tensor]] | tuple[Tensor, Tensor]


@dataclass(frozen=True)
class TopLoss:
    """One sample with a high loss.

    ``image`` is the ``(C, H, W)`` tensor the model was given, ``cam`` the ``(H, W)`` map of
    the predicted class, ``prob`` the predicted class's probability and ``loss`` the
    cross-entropy of the true class. ``index`` counts samples in the order the data gave
    them. Classes are the data's labels (see ``class_index`` of :func:`top_losses`).
    """

    index: int
    image: Tensor
    true: int
    pred: int
    prob: float
    loss: float
    cam: Tensor


def top_losses(
    model: nn.Module,
    data: Data,
    n: int = 9,
    *,
    only_wrong: bool = False,
    class_index: Sequence[int] | None = None,
    layer: str | nn.Module | None = None,
    method: str = "gradcam",
    batch_size: int = 64,
) -> list[TopLoss]:
    """The ``n`` samples with the highest cross-entropy, highest first, with class maps.

    The highest losses are the most confidently wrong predictions; ties keep data order.
    Only the current top ``n`` images are held in memory, so a whole test loader is fine.

    Args:
        model: a classifier; run in eval mode, left as it was.
        data: batches ``(images, labels)`` (a DataLoader or any iterable of them), or
            one ``(images, labels)`` pair of tensors.
        n: how many samples to return.
        only_wrong: skip correctly classified samples.
        class_index: data label ``i`` is the model's class ``class_index[i]``; only those
            logits compete (e.g. Imagenette's 10 classes of a 1000-class model).
        layer, method: passed to :func:`~reslab.analysis.gradcam.gradcam`.
        batch_size: images per pass when ``data`` is one pair of tensors, and for the maps.

    Batches are moved to the device of the model's parameters; the model is not moved.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    device = _model_device(model)
    subset = None if class_index is None else torch.as_tensor(list(class_index), device=device)
    best: dict[str, Tensor] | None = None
    seen = 0
    with eval_mode(model), torch.no_grad():
        for images, labels in _batches(data, batch_size):
            images, labels = images.to(device), torch.as_tensor(labels).to(device).long()
            scored = _score(model(images), labels, subset)
            scored.update(images=images, index=torch.arange(seen, seen + len(images)))
            seen += len(images)
            if only_wrong:
                wrong = scored["pred"] != scored["labels"]
                scored = {k: v[wrong.to(v.device)] for k, v in scored.items()}
            best = _keep_top(best, scored, n)
    if seen == 0:
        raise ValueError("no samples: the data is empty")
    if best is None or len(best["loss"]) == 0:
        return []
    targets = best["pred"] if subset is None else subset.cpu()[best["pred"]]
    images = best["images"].to(device)
    cams = gradcam(model, images, targets, layer, method=method, batch_size=batch_size)
    return [_item(best, i, cams[i]) for i in range(len(best["loss"]))]


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _batches(data: Data, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        images, labels = data
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size], labels[start : start + batch_size]
        return
    for batch in data:
        yield batch[0], batch[1]


def _score(logits: Tensor, labels: Tensor, subset: Tensor | None) -> dict[str, Tensor]:
    logits = logits.float() if subset is None else logits.float()[:, subset]
    bad = (labels < 0) | (labels >= logits.shape[1])
    if bad.any():
        raise ValueError(f"label {int(labels[bad][0])} out of range for {logits.shape[1]} classes")
    prob, pred = logits.softmax(1).max(1)
    loss = F.cross_entropy(logits, labels, reduction="none")
    # On the CPU: only the top n are kept, and they are few.
    return {
        k: v.cpu() for k, v in zip(("loss", "pred", "prob", "labels"), (loss, pred, prob, labels))
    }


def _keep_top(best: dict[str, Tensor] | None, new: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    # Cut the batch to its own top n before moving its images off the device.
    new = {k: v.cpu() for k, v in _top(new, n).items()}
    return new if best is None else _top({k: torch.cat([best[k], new[k]]) for k in new}, n)


def _top(rows: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    # Highest loss first; equal losses in data order (sort by index, then stably by loss).
    by_index = rows["index"].argsort()
    by_loss = rows["loss"][by_index].sort(descending=True, stable=True).indices
    order = by_index[by_loss][:n]
    return {k: v[order.to(v.device)] for k, v in rows.items()}


def _item(best: dict[str, Tensor], i: int, cam: Tensor) -> TopLoss:
    return TopLoss(
        index=int(best["index"][i]),
        image=best["images"][i],
        true=int(best["labels"][i]),
        pred=int(best["pred"][i]),
        prob=float(best["prob"][i]),
        loss=float(best["loss"][i]),
        cam=cam.detach().cpu(),
    )


# ----------------------------------------------------------------------------- the figure
def plot_top_losses(
    items: Sequence[TopLoss],
    class_names: Sequence[str] | None,
    path: str | Path,
    **kwargs: Any,
) -> Path:
    """Write :func:`top_losses_figure` as a PNG, atomically (a temporary file in the same
    folder, then renamed onto ``path``). ``kwargs`` go to :func:`top_losses_figure`."""
    return save_figure(top_losses_figure(items, class_names, **kwargs), path)


def top_losses_records(
    items: Sequence[TopLoss],
    class_names: Sequence[str] | None = None,
    files: Sequence[str | Path] | None = None,
) -> list[dict]:
    """The items as JSON-ready dicts (rank, index, true/predicted class and name,
    probability, loss; ``file`` when ``files`` maps sample indices to file paths)."""
    records = []
    for rank, item in enumerate(items, 1):
        record = {
            "rank": rank,
            "index": item.index,
            "true": item.true,
            "true_name": _name(class_names, item.true),
            "pred": item.pred,
            "pred_name": _name(class_names, item.pred),
            "prob": round(item.prob, 6),
            "loss": round(item.loss, 6),
        }
        if files is not None and 0 <= item.index < len(files):
            record["file"] = str(files[item.index])
        records.append(record)
    return records


def top_losses_figure(
    items: Sequence[TopLoss],
    class_names: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
) -> Figure:
    """A matplotlib ``Figure``: a grid of the images with their class maps over them, each
    titled "true / predicted / probability of the prediction".

    Images are shown as the model took them (0-1 pixels; one channel in grey). Classes
    without a name (``class_names`` None or too short) show as their index.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    if not items:
        raise ValueError("no items to plot")
    ncols = ncols or min(len(items), math.ceil(math.sqrt(len(items))))
    nrows = math.ceil(len(items) / ncols)
    fig = Figure(figsize=(2.6 * ncols, 2.9 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        _draw(ax, item, class_names, alpha, cmap)
    fig.suptitle("true / predicted / probability of the prediction", fontsize=10)
    fig.tight_layout()
    return fig


def _draw(ax, item: TopLoss, class_names: Sequence[str] | None, alpha: float, cmap: str) -> None:
    show_map(ax, item.image, item.cam, alpha=alpha, cmap=cmap)
    ax.set_title(
        f"{_name(class_names, item.true)} / {_name(class_names, item.pred)} / {item.prob:.2f}",
        fontsize=8,
    )


def _name(class_names: Sequence[str] | None, index: int) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)
