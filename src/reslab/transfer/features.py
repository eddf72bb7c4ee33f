"""Train a head on cached embeddings: the "ResNet is two models" view made fast.

With the backbone frozen (parameters *and* BatchNorm statistics), the embedding of an image
never changes, so it is computed once — optionally for the image and its mirror image — and
every epoch after that trains one linear layer on a ``(N, D)`` tensor instead of running the
whole network. Without flips, the batches, their order and hence the result are those of the
uncached frozen run (the loaders share the order of :mod:`reslab.data.loaders`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from reslab.data import mix_seeds
from reslab.files import atomic_write_bytes

__all__ = [
    "FeatureLoader",
    "FeatureSet",
    "ViewAverage",
    "extract_features",
    "load_features",
    "save_features",
    "state_digest",
]


@dataclass
class FeatureSet:
    """Embeddings ``features`` ``(N, V, D)`` (V views: the image, and its mirror when flipped),
    ``labels`` ``(N,)`` and the class names."""

    features: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def views(self) -> int:
        return self.features.shape[1]


@torch.no_grad()
def extract_features(
    model: nn.Module,
    loader: Iterable,
    *,
    flip: bool = False,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    class_names: list[str] | None = None,
    progress: bool = True,
    desc: str = "features",
) -> FeatureSet:
    """Run ``model.backbone`` (eval mode) over ``loader`` once; with ``flip`` also over the
    horizontally mirrored images (a second view for augmentation and test-time averaging)."""
    from tqdm.auto import tqdm

    backbone = getattr(model, "backbone", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, labels = [], []
    try:
        for xb, yb in tqdm(loader, desc=desc, disable=not progress, leave=False):
            xb = xb.to(device)
            if input_transform is not None:
                xb = input_transform(xb)
            views = [backbone(xb)]
            if flip:
                views.append(backbone(xb.flip(-1)))
            feats.append(torch.stack(views, 1).float().cpu())
            labels.append(yb.cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader yielded no images")
    names = class_names or list(getattr(getattr(loader, "dataset", None), "class_names", []))
    return FeatureSet(torch.cat(feats), torch.cat(labels).long(), names)


def save_features(path: str | Path, fs: FeatureSet, meta: dict | None = None) -> Path:
    """Store a :class:`FeatureSet` as safetensors (atomically), with ``meta`` in its header."""
    from safetensors.torch import save

    header = {"class_names": json.dumps(fs.class_names), "meta": json.dumps(meta or {})}
    tensors = {"features": fs.features.contiguous(), "labels": fs.labels.contiguous()}
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=header))
    return path


def load_features(path: str | Path, meta: dict | None = None) -> FeatureSet | None:
    """Read features saved by :func:`save_features`; None when missing, unreadable, or made
    with other settings than ``meta`` (a stale cache is recomputed, never trusted)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if meta is not None and json.loads(header.get("meta", "{}")) != meta:
                return None
            return FeatureSet(
                fh.get_tensor("features"),
                fh.get_tensor("labels"),
                json.loads(header.get("class_names", "[]")),
            )
    except Exception:  # safetensors raises several types for damaged files
        return None


def state_digest(module: nn.Module) -> str:
    """A short digest of a module's parameters and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureLoader:
    """Batches of cached features, in the same order as reslab's image loaders.

    Training batches (``train=True``) are ``(B, D)``: each sample's view is drawn at random per
    epoch when there are several (flip augmentation for free). Evaluation batches are
    ``(B, V, D)``, for :class:`ViewAverage` to average over the views.

    Args:
        features: the :class:`FeatureSet`.
        batch_size: samples per batch.
        train: shuffle (per ``seed`` and epoch), drop the last partial batch, one view each.
        seed: the loaders' seed (same value as the image loader's for identical order).
        device: where batches are put.
    """

    def __init__(
        self,
        features: FeatureSet,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.fs = features
        self.device = torch.device(device)
        self.x = features.features.to(self.device)
        self.y = features.labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.epoch = 0
        self.dataset = features

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.y)
        g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch))  # as the image loaders
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        views = self.fs.views
        pick = torch.randint(0, views, (n,), generator=g) if self.train and views > 1 else None
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size].to(self.device)
            if not self.train:
                yield self.x[idx], self.y[idx]
            elif pick is None:
                yield self.x[idx, 0], self.y[idx]
            else:
                yield self.x[idx, pick[idx.cpu()].to(self.device)], self.y[idx]


class ViewAverage(nn.Module):
    """Wrap a head: ``(B, D)`` → ``head(x)``; ``(B, V, D)`` → mean over views of the logits."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            b, v, d = x.shape
            return self.head(x.reshape(b * v, d)).view(b, v, -1).mean(1)
        return self.head(x)
