"""The run's model on its test data: accuracy, confusion matrix, per-class accuracy and the
most confidently wrong images with their class activation maps.

The expensive part of a report, so it is bounded: at most ``limit`` test images (a fixed
random subset, the same every time), and class maps for the ``top`` worst of them only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from reslab.analysis.top_losses import TopLoss, top_losses
from reslab.data import TensorImageDataset, load_dataset, make_loader
from reslab.models import ResNet
from reslab.training import evaluate
from reslab.transfer import resize_and_repeat

__all__ = ["EvalAnalysis", "analyze", "analyze_test_set", "load_test_data"]


@dataclass
class EvalAnalysis:
    """What the model does on (a subset of) the run's test split."""

    data: str
    split: str
    total: int  # images in the split
    count: int  # images analysed
    accuracy: float
    loss: float
    confusion: Tensor  # (true, predicted) counts
    class_names: list[str]
    top: list[TopLoss]
    method: str
    layer: str | None
    top_files: list[str] = field(default_factory=list)  # file of each top loss (folders)

    def per_class(self) -> list[tuple[str, int, int, float]]:
        """``(class, correct, images, accuracy)`` per class."""
        rows = []
        for i, name in enumerate(self.class_names):
            total = int(self.confusion[i].sum())
            correct = int(self.confusion[i, i])
            rows.append((name, correct, total, correct / total if total else float("nan")))
        return rows


def load_test_data(config: dict[str, Any]):
    """The test split the run's config names (``data``, ``data_dir``, ``classes``)."""
    if not config.get("data"):
        raise ValueError("the run's config.json names no data set")
    on_error = "skip" if config.get("skip_bad_images") else "raise"
    return load_dataset(
        config["data"], "test", data_dir=config.get("data_dir"), classes=config.get("classes"),
        on_error=on_error, download=False, progress=False,
    )  # fmt: skip


def analyze_test_set(model: ResNet, config: dict[str, Any], **options: Any) -> EvalAnalysis:
    """:func:`analyze` on the test data of ``config`` (a run's ``config.json``)."""
    return analyze(model, load_test_data(config), data=str(config["data"]), **options)


def analyze(
    model: ResNet,
    ds,
    *,
    data: str = "",
    split: str = "test",
    class_index: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    limit: int | None = 2000,
    top: int = 12,
    method: str = "gradcam",
    layer: str | None = None,
    batch_size: int = 128,
) -> EvalAnalysis:
    """Evaluate ``model`` on the data set ``ds`` (``data``/``split`` name it in the report).

    Args:
        class_index: data label ``i`` is the model's class ``class_index[i]`` (a
            1000-class model on Imagenette); default: the same classes.
        class_names: names to show per data label (default: the data set's).
        limit: analyse a fixed random subset of this many images (None: all).
        top: how many of the most confidently wrong images to keep, with class maps.
        method, layer: how the maps are computed (:func:`~reslab.analysis.gradcam`).
    """
    n_data = len(ds.class_names)
    n_model = model.num_classes if class_index is None else len(class_index)
    if n_model != n_data:
        raise ValueError(f"the model scores {n_model} classes but the data has {n_data}")
    total = len(ds)
    chosen = torch.arange(total)
    if limit is not None and limit < total:
        g = torch.Generator().manual_seed(0)
        chosen = torch.randperm(total, generator=g)[:limit].sort().values
        ds = ds.subset(chosen)
    device = next(model.parameters()).device
    loader = make_loader(
        ds, batch_size, train=False, device=device, model_cfg=model.default_cfg, workers=0
    )
    transform = _input_transform(model, ds)
    result = evaluate(model, loader, class_index, input_transform=transform)
    items = top_losses(
        model, _Mapped(loader, transform), top, only_wrong=True, class_index=class_index,
        layer=layer, method=method, batch_size=min(batch_size, 32),
    ) if top else []  # fmt: skip
    files = getattr(ds, "paths", None)
    top_files = [str(files[item.index]) for item in items] if files is not None else []
    # Number the images as the whole split does, not as the subset.
    items = [replace(item, index=int(chosen[item.index])) for item in items]
    if layer is None and method != "saliency":
        layer = (getattr(model, "stage_names", None) or [None])[-1]
    return EvalAnalysis(
        data=data, split=split, total=total, count=result.count, accuracy=result.accuracy,
        loss=result.loss, confusion=result.confusion,
        class_names=list(class_names or ds.class_names), top=items, method=method, layer=layer,
        top_files=top_files,
    )  # fmt: skip


def _input_transform(model: ResNet, ds) -> Callable[[Tensor], Tensor] | None:
    """In-memory images at another size than the model's input (a fine-tuned model), or
    grey images for an RGB model: resized / repeated as the fine-tuning recipe fed them."""
    if ds.num_channels not in (1, model.in_chans):
        raise ValueError(
            f"the model takes {model.in_chans}-channel images; the data has {ds.num_channels}"
        )
    size = int(model.default_cfg["input_size"][-1])
    resize = isinstance(ds, TensorImageDataset) and ds.image_size[-1] != size
    repeat = ds.num_channels == 1 and model.in_chans != 1
    if not (resize or repeat):
        return None
    return resize_and_repeat(size if resize else None, model.in_chans if repeat else None)


class _Mapped:
    """A loader with a transform applied to its images (iterable again and again)."""

    def __init__(self, loader, transform: Callable[[Tensor], Tensor] | None) -> None:
        self.loader, self.transform = loader, transform

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in self.loader:
            yield (self.transform(images) if self.transform else images), labels
