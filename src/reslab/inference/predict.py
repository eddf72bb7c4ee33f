"""Classify image files: decode any mode, resize/crop as the model's config says, top-k names.

A file that cannot be decoded becomes an error entry in the results; the other files are still
classified, so one bad file in a folder costs one line, not the whole run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from reslab.data import ImageDecodeError, eval_transform_from_cfg, load_image
from reslab.weights import imagenet_class_names

__all__ = ["Prediction", "class_names_of", "load_for_model", "predict_files", "predict_tensor"]


@dataclass
class Prediction:
    """The top-k classes of one file, or why it could not be classified."""

    file: str
    classes: list[tuple[int, str, float]] = field(default_factory=list)  # (index, name, prob)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {
            "file": self.file,
            "predictions": [
                {"index": i, "class": name, "probability": round(p, 6)}
                for i, name, p in self.classes
            ],
        }


def class_names_of(model: nn.Module) -> list[str]:
    """The model's class names: its config's, else ImageNet's for 1000 classes, else numbers."""
    cfg = getattr(model, "default_cfg", {}) or {}
    names = cfg.get("class_names")
    n = getattr(model, "num_classes", None) or (len(names) if names else 0)
    if names and len(names) == n:
        return list(names)
    if n == 1000:
        return list(imagenet_class_names())
    return [str(i) for i in range(n)]


def load_for_model(path: str | Path, model: nn.Module) -> Tensor:
    """Decode ``path`` and apply the model's eval resize/centre-crop: float ``(C, S, S)`` in 0–1.

    Raises :class:`~reslab.data.ImageDecodeError` (one line naming the file) for a file that
    is not an image or is truncated.
    """
    cfg = getattr(model, "default_cfg", {}) or {}
    channels = getattr(model, "in_chans", 3)
    if channels not in (1, 3):
        raise ValueError(f"cannot feed image files to a {channels}-channel model")
    img = load_image(path, channels=channels)
    return eval_transform_from_cfg(cfg)(img).float().div_(255)


@torch.no_grad()
def predict_tensor(
    model: nn.Module,
    images: Tensor,
    topk: int = 5,
    *,
    runner: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k ``(probabilities, indices)`` of a batch of 0–1 images.

    Args:
        model: the classifier.
        images: ``(N, C, H, W)`` in 0–1.
        topk: classes per image.
        runner: computes the logits instead of ``model`` (an engine's runner, from
            :meth:`reslab.inference.Engine.prepare`).
    """
    if runner is None:
        model.eval()
        runner = model
    probs = runner(images).float().softmax(-1)
    return probs.topk(min(topk, probs.shape[-1]), dim=-1)


def predict_files(
    model: nn.Module,
    files: Sequence[str | Path],
    *,
    topk: int = 5,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    runner: Callable[[Tensor], Tensor] | None = None,
) -> list[Prediction]:
    """Classify ``files`` with ``model``; results in the order given, errors included.

    Args:
        model: a classifier with ``default_cfg`` (input size, crop, class names).
        files: image paths.
        topk: classes to report per file.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        runner: computes the logits instead of ``model``: an engine's runner (from
            :meth:`reslab.inference.Engine.prepare`); ``model`` still gives the resize/crop
            and the class names.
    """
    if topk < 1:
        raise ValueError(f"topk must be positive, got {topk}")
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device).eval()
    names = class_names_of(model)
    results = [Prediction(str(f)) for f in files]
    pending: list[tuple[int, Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.stack([x for _, x in pending]).to(device)
        probs, idx = predict_tensor(model, batch, topk, runner=runner)
        for (i, _), p_row, i_row in zip(pending, probs.tolist(), idx.tolist()):
            results[i].classes = [(c, names[c], p) for p, c in zip(p_row, i_row)]
        pending.clear()

    for i, f in enumerate(files):
        try:
            pending.append((i, load_for_model(f, model)))
        except (ImageDecodeError, OSError) as err:
            results[i].error = str(err).strip().splitlines()[0]
        if len(pending) >= batch_size:
            flush()
    flush()
    return results
