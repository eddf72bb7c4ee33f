"""A classifier is two models: an image embedding and a table of class embeddings.

``logits = backbone(image) @ class_embedding.weight.T + bias``: the last linear layer's rows are
one learned vector per class, and the bias is a small per-class offset. This module splits a
model that way and measures how much the bias matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from reslab.models import ResNet

__all__ = [
    "ClassEmbeddingReport",
    "ClassEmbeddingSplit",
    "class_embedding_report",
    "find_classifier",
    "split_class_embedding",
]


class ClassEmbeddingSplit(NamedTuple):
    """``backbone`` (image → embedding), ``class_embedding`` and the dropped ``bias``."""

    backbone: nn.Module
    class_embedding: nn.Embedding
    bias: Tensor | None


class _ClassifierInput(nn.Module):
    """The embedding a model feeds its classifier, captured by a hook on that layer.

    Works for any model that calls its last linear layer as a module (torchvision, timm, VGG);
    the classifier itself still runs, a negligible cost next to the backbone.
    """

    _classifier: nn.Linear

    def __init__(self, model: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_classifier", classifier)  # already inside `model`

    def forward(self, x: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handle = self._classifier.register_forward_pre_hook(
            lambda _m, args: captured.append(args[0])
        )
        try:
            self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the model never called its classifier layer")
        return captured[-1]


def find_classifier(model: nn.Module) -> nn.Linear:
    """The final linear layer: ``fc`` (ResNets), ``head.fc`` or the last ``Linear`` of
    ``classifier``/``head`` (VGG, timm)."""
    for name in ("fc", "head.fc", "classifier", "head"):
        module: nn.Module | None = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.Linear):
            return module
        if isinstance(module, nn.Sequential):
            linears = [m for m in module if isinstance(m, nn.Linear)]
            if linears:
                return linears[-1]
    raise ValueError(
        f"{type(model).__name__} has no linear classifier (looked for fc, head.fc, classifier, "
        "head); a reslab model built with num_classes=0 has none"
    )


def split_class_embedding(model: nn.Module) -> ClassEmbeddingSplit:
    """Split a classifier into image embedding, class-embedding table and bias.

    ``backbone(x) @ class_embedding.weight.T + bias == model(x)``. The embedding table
    *shares* its weight with the model's classifier (no copy): training one trains the other.
    The bias is returned detached (``None`` when the classifier has none).

    Args:
        model: a reslab :class:`~reslab.models.ResNet`, or a torchvision/timm model with a
            final linear layer (``fc``, ``head.fc``, or the last ``Linear`` of ``classifier``).
    """
    fc = find_classifier(model)
    backbone = model.backbone if isinstance(model, ResNet) else _ClassifierInput(model, fc)
    embedding = nn.Embedding(fc.out_features, fc.in_features, device="meta")
    embedding.weight = fc.weight  # the same Parameter: one table, two views
    bias = None if fc.bias is None else fc.bias.detach()
    return ClassEmbeddingSplit(backbone, embedding, bias)


@dataclass
class ClassEmbeddingReport:
    """What the bias of a classifier does: its range, and how often it decides the top-1."""

    num_classes: int
    dim: int
    bias_min: float
    bias_max: float
    bias_mean: float
    bias_std: float
    bias_argmin: int
    bias_argmax: int
    examples: int = 0
    top1_changed: int = 0
    correct_with_bias: int | None = None
    correct_without_bias: int | None = None

    @property
    def top1_change_rate(self) -> float:
        return self.top1_changed / self.examples if self.examples else 0.0

    def format(self, class_names: Sequence[str] | None = None) -> str:
        def name(i: int) -> str:
            return f"{i} ({class_names[i]})" if class_names else str(i)

        lines = [
            f"class embedding: {self.num_classes} classes x {self.dim} dims",
            f"bias: min {self.bias_min:+.4f} (class {name(self.bias_argmin)}), "
            f"max {self.bias_max:+.4f} (class {name(self.bias_argmax)}), "
            f"mean {self.bias_mean:+.4f}, std {self.bias_std:.4f}",
        ]
        if self.examples:
            lines.append(
                f"top-1 changes without the bias on {self.top1_changed} of {self.examples} "
                f"images ({100 * self.top1_change_rate:.2f} %)"
            )
        if (
            self.correct_with_bias is not None
            and self.correct_without_bias is not None
            and self.examples
        ):
            lines.append(
                f"top-1 accuracy: {100 * self.correct_with_bias / self.examples:.2f} % with bias, "
                f"{100 * self.correct_without_bias / self.examples:.2f} % without"
            )
        return "\n".join(lines)


@torch.no_grad()
def class_embedding_report(
    model: nn.Module,
    batches: Iterable[Tensor | Sequence[Tensor]] = (),
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> ClassEmbeddingReport:
    """Bias statistics, and top-1 with vs without the bias on ``batches``.

    Args:
        model: a classifier (see :func:`split_class_embedding`); it is put in eval mode.
        batches: images, or ``(images, labels)`` pairs (labels add accuracies), such as a
            ``DataLoader``; empty for the bias statistics alone.
        max_batches: stop after this many batches.
        device: where to run (default: the model's device).
    """
    backbone, table, bias = split_class_embedding(model)
    device = torch.device(device) if device else table.weight.device
    model.eval().to(device)
    weight = table.weight.detach()
    b = torch.zeros(weight.shape[0], device=device) if bias is None else bias.to(device)
    report = ClassEmbeddingReport(
        num_classes=weight.shape[0],
        dim=weight.shape[1],
        bias_min=float(b.min()),
        bias_max=float(b.max()),
        bias_mean=float(b.mean()),
        bias_std=float(b.std()) if b.numel() > 1 else 0.0,
        bias_argmin=int(b.argmin()),
        bias_argmax=int(b.argmax()),
    )
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        if isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        scores = backbone(x.to(device)) @ weight.T  # logits minus the bias
        without = scores.argmax(1)
        with_bias = (scores + b).argmax(1)
        report.examples += len(x)
        report.top1_changed += int((without != with_bias).sum())
        if y is not None:
            y = y.to(device)
            report.correct_with_bias = (report.correct_with_bias or 0) + int((with_bias == y).sum())
            report.correct_without_bias = (report.correct_without_bias or 0) + int(
                (without == y).sum()
            )
    return report
