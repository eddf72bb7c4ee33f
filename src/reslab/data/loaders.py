"""Batch loaders: in-memory tensors augmented on the device, or image folders through workers.

Both kinds are deterministic functions of ``(seed, epoch)``: the shuffle order and every
augmentation draw are fixed by them, whatever the worker or process count. That is what lets a
run killed mid-epoch resume bit-exactly (``batches(start=k)`` skips straight to batch k) and
what makes N processes with 1/N of the global batch see exactly the single-process data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from reslab.data.batching import epoch_order, global_batches, process_spans
from reslab.data.datasets import ImageDataset, TensorImageDataset
from reslab.data.decoded import DecodedFolderDataset
from reslab.data.decoded_loader import DecodedLoader
from reslab.data.folder import ImageFolderDataset
from reslab.data.transforms import (
    EvalTransform,
    Presized,
    TrainTransform,
    crop_flip_params,
    eval_transform_from_cfg,
    random_crop_flip,
)

__all__ = ["DecodedLoader", "FolderLoader", "TensorLoader", "make_loader"]


class TensorLoader:
    """Batches of an in-memory :class:`TensorImageDataset`, augmented a whole batch at a time.

    Yields ``(images float32 (B, C, H, W) in 0..1, labels int64)`` on ``device``.

    Args:
        dataset: the in-memory data set (its uint8 images are moved to ``device`` once).
        batch_size: samples per batch *per process* (global batch: ``batch_size * world_size``).
        shuffle: a new order every epoch (from ``seed`` and the epoch).
        augment: random crop with ``pad`` pixels of zero padding, plus a flip if ``flip``.
        pad: padding of the random crop (4 for 32 px images, as in the ResNet paper).
        flip: random horizontal flips.
        drop_last: drop the last partial batch (training).
        device: where images live and are augmented.
        seed: base seed of the order and the augmentation.
        rank, world_size: this process's share of every global batch under torchrun.
    """

    def __init__(
        self,
        dataset: TensorImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        pad: int = 4,
        flip: bool = True,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.augment, self.pad, self.flip = shuffle, augment, pad, flip
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.global_batch = batch_size * world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return global_batches(len(self.images), self.global_batch, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches(0)

    def _epoch_plan(self) -> tuple[Tensor, Tensor | None]:
        n = len(self.images)
        order, g = epoch_order(n, self.seed, self.epoch, self.shuffle)
        params = crop_flip_params(n, self.pad, self.flip, g) if self.augment else None
        return order, params

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate this epoch's batches from batch ``start`` on (for resuming mid-epoch)."""
        order, params = self._epoch_plan()
        # The epoch's plan goes to the device once: a copy per batch would make a GPU wait.
        order = order.to(self.device)
        params = params.to(self.device) if params is not None else None
        spans = process_spans(
            start, len(self), self.global_batch, len(order), self.rank, self.world_size
        )
        for first, last in spans:
            idx = order[first:last]
            x = self.images[idx]
            if params is not None:
                x = random_crop_flip(x, params[first:last], self.pad)
            yield x.float().div_(255), self.labels[idx]


class _EpochBatchSampler:
    """Index batches ``[(index, epoch), …]`` for one process; the epoch travels with each index,
    so workers seed their augmentation correctly however they were started."""

    def __init__(self, loader: FolderLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader) - self.loader._start

    def __iter__(self):
        ld = self.loader
        n = len(ld.dataset)
        order, _ = epoch_order(n, ld.seed, ld.epoch, ld.shuffle)
        for first, last in process_spans(
            ld._start, len(ld), ld.global_batch, n, ld.rank, ld.world_size
        ):
            yield [(int(i), ld.epoch) for i in order[first:last]]


class _EpochDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, epoch = item
        self.dataset.epoch = epoch
        return self.dataset[index]


class FolderLoader:
    """Batches of an :class:`ImageFolderDataset`, decoded and augmented in DataLoader workers.

    Yields ``(images float32 (B, C, S, S) in 0..1, labels int64)`` on ``device``. Arguments as
    for :class:`TensorLoader`, plus ``workers`` (DataLoader processes).
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        workers: int = 2,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset.transform is None:
            raise ValueError("an image-folder loader needs dataset.transform (a fixed-size output)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self._start = 0
        self.dataset.seed = seed
        self._dl = torch.utils.data.DataLoader(
            _EpochDataset(dataset),
            batch_sampler=_EpochBatchSampler(self),
            num_workers=workers,
            # Not persistent: persistent workers take seconds to shut down when the loader is
            # dropped, and forking once per epoch costs little next to an epoch of images.
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return global_batches(len(self.dataset), self.global_batch, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        self._start = start
        for x, y in self._dl:
            x = x.to(self.device, non_blocking=True)
            yield x.float().div_(255), y.to(self.device, non_blocking=True)


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    *,
    train: bool,
    device: str | torch.device = "cpu",
    seed: int = 0,
    workers: int = 2,
    image_size: int | None = None,
    model_cfg: Mapping[str, Any] | None = None,
    augment: bool = True,
    rank: int = 0,
    world_size: int = 1,
    presize: int | None = None,
    min_scale: float = 0.35,
    square_crops: bool = False,
) -> TensorLoader | FolderLoader | DecodedLoader:
    """A training (shuffled, augmented, last partial batch dropped) or evaluation loader.

    In-memory data sets get a :class:`TensorLoader` (training: pad-and-crop by 1/8 of the
    side plus horizontal flips). Image folders get a random-resized crop (area ``min_scale``
    to 1 of the image, aspect 3/4–4/3 or with ``square_crops`` 1:1) and a flip for training,
    and for evaluation the model's resize/crop (``model_cfg``: ``input_size``, ``crop_pct``,
    ``interpolation``). A :class:`DecodedFolderDataset` (decoded once at a presize) gets a
    :class:`DecodedLoader`, which evaluates on the whole presized image; a folder decoded every
    epoch gets a :class:`FolderLoader`, with ``presize`` the same pixels and crops as the
    decoded folder's loader.
    """
    if isinstance(dataset, TensorImageDataset):
        pad = max(1, dataset.image_size[-1] // 8)
        return TensorLoader(
            dataset, batch_size, shuffle=train, augment=train and augment, pad=pad,
            drop_last=train, device=device, seed=seed, rank=rank, world_size=world_size,
        )  # fmt: skip
    cfg = dict(model_cfg or {})
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    ratio = (1.0, 1.0) if square_crops else (3 / 4, 4 / 3)
    presized = presize is not None or isinstance(dataset, DecodedFolderDataset)
    # A presized image resamples with the bilinear filter the decoded loader's batches use.
    interpolation = "bilinear" if presized else cfg.get("interpolation", "bilinear")
    train_tf = (
        TrainTransform(size, (min_scale, 1.0), ratio, interpolation) if train and augment else None
    )
    common: dict[str, Any] = {"shuffle": train, "drop_last": train, "device": device, "seed": seed,
              "rank": rank, "world_size": world_size}  # fmt: skip
    if isinstance(dataset, DecodedFolderDataset):
        return DecodedLoader(dataset, batch_size, size=size, transform=train_tf, **common)
    if isinstance(dataset, ImageFolderDataset):
        transform: TrainTransform | EvalTransform | Presized
        if train_tf is not None:
            transform = train_tf
        elif presized:
            transform = EvalTransform(size, 1.0, "bilinear")
        else:
            transform = eval_transform_from_cfg(cfg, size)
        if presize is not None:
            transform = Presized(presize, transform)
        return FolderLoader(
            dataset.with_transform(transform), batch_size, workers=workers, **common
        )
    raise TypeError(f"make_loader: unsupported data set type {type(dataset).__name__}")
