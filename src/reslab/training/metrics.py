"""Metrics (accuracy, top-k), pooled across processes, and ``evaluate`` with a confusion matrix."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from reslab.training.distributed import all_reduce_sum

__all__ = ["Accuracy", "EvalResult", "Metric", "TopKAccuracy", "evaluate", "get_metric"]


class Metric:
    """A metric accumulated over batches as ``total / count`` (so processes can pool sums).

    The running total stays on the device of the predictions (no host read per batch);
    :meth:`compute` reads it once.
    """

    name = "metric"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def batch_value(self, pred: Tensor, target: Tensor) -> Tensor:
        """Sum of the per-sample values of one batch."""
        raise NotImplementedError

    def update(self, pred: Tensor, target: Tensor) -> None:
        value = self.batch_value(pred, target).detach().double()
        if self.total.device != value.device:
            self.total, self.count = self.total.to(value.device), self.count.to(value.device)
        self.total += value
        self.count += len(target)

    def all_reduce(self) -> None:
        self.total, self.count = all_reduce_sum(torch.stack([self.total, self.count])).unbind()

    def compute(self) -> float:
        total, count = torch.stack([self.total, self.count]).tolist()  # one read
        return total / count if count > 0 else float("nan")


class Accuracy(Metric):
    name = "accuracy"

    def batch_value(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred.argmax(-1) == target).sum()


class TopKAccuracy(Metric):
    """The true label is among the ``k`` highest scores (``k`` capped at the class count)."""

    def __init__(self, k: int = 5) -> None:
        self.k = k
        self.name = f"top{k}"
        super().__init__()

    def batch_value(self, pred: Tensor, target: Tensor) -> Tensor:
        top = pred.topk(min(self.k, pred.shape[-1]), dim=-1).indices
        return (top == target[:, None]).any(-1).sum()


def get_metric(name: str) -> Metric:
    """``"accuracy"`` (or ``"acc"``, ``"top1"``) or ``"topK"`` such as ``"top5"``."""
    key = name.lower()
    if key in ("accuracy", "acc", "top1"):
        return Accuracy()
    if key.startswith("top") and key[3:].isdigit():
        return TopKAccuracy(int(key[3:]))
    raise ValueError(f"unknown metric {name!r}; expected accuracy or topK (e.g. top5)")


@dataclass
class EvalResult:
    """What :func:`evaluate` measured: accuracy, top-5, mean loss, the confusion matrix."""

    accuracy: float
    top5: float
    loss: float
    count: int
    confusion: Tensor  # (true, predicted) counts
    class_names: list[str] | None = field(default=None)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    class_index: Sequence[int] | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    amp: bool = False,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    runner: Callable[[Tensor], Tensor] | None = None,
) -> EvalResult:
    """Accuracy, top-5, cross-entropy and a confusion matrix of ``model`` over ``loader``.

    Args:
        model: a classifier.
        loader: batches ``(images, labels)``.
        class_index: evaluate on a subset of the model's classes: label ``i`` of the data is
            the model's class ``class_index[i]``, and only those logits compete
            (e.g. Imagenette's 10 ImageNet indices for a 1000-class model).
        num_classes: size of the confusion matrix (default: the logits' width).
        class_names: names to keep with the result.
        device: where to run (default: the model's).
        amp: bf16 autocast.
        input_transform: applied to every image batch (e.g. channels-last).
        runner: computes the logits instead of ``model`` (e.g. an inference engine's
            runner); ``model`` still says the device.
    """
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device).eval()
    idx = torch.as_tensor(list(class_index), device=device) if class_index is not None else None
    loss_sum, correct, top5, count = 0.0, 0, 0, 0
    confusion: Tensor | None = None
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast:
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            if input_transform is not None:
                xb = input_transform(xb)
            logits = (runner or model)(xb).float()
            if idx is not None:
                logits = logits[:, idx]
            k = logits.shape[-1]
            if confusion is None:
                confusion = torch.zeros((num_classes or k, num_classes or k), dtype=torch.int64)
            if int(yb.max()) >= k:
                raise ValueError(f"label {int(yb.max())} but the model scores only {k} classes")
            loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
            pred = logits.argmax(-1)
            correct += int((pred == yb).sum())
            top5 += int((logits.topk(min(5, k), -1).indices == yb[:, None]).any(-1).sum())
            count += len(yb)
            flat = (yb * confusion.shape[0] + pred).cpu()
            confusion += torch.bincount(flat, minlength=confusion.numel()).view_as(confusion)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    assert confusion is not None  # made at the first batch, and there was one
    return EvalResult(
        accuracy=correct / count,
        top5=top5 / count,
        loss=loss_sum / count,
        count=count,
        confusion=confusion,
        class_names=list(class_names) if class_names else None,
    )
