"""Batches of a decoded image folder: random-resized crops and flips of a whole batch at once.

The images sit in memory (on the training device) at their presize. A training batch gathers
its images, draws every sample's crop box and flip, and resamples them all with two batched
matrix products (:func:`~reslab.data.resample.resized_crops`). No worker processes, no JPEG
decoding: the epoch is bound by the model.

Each sample's draw comes from a generator seeded by ``(seed, epoch, index)``, through the same
:meth:`~reslab.data.transforms.TrainTransform.draw` an
:class:`~reslab.data.folder.ImageFolderDataset` hands its transform. So this loader and a
:class:`~reslab.data.loaders.FolderLoader` decoding the files every epoch with
``Presized(presize, transform)`` take the same crops of the same pixels, batch for batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from reslab.data.batching import epoch_order, global_batches, process_spans
from reslab.data.decoded import DecodedFolderDataset
from reslab.data.folder import mix_seeds
from reslab.data.resample import resize_images, resized_crops
from reslab.data.transforms import TrainTransform

__all__ = ["DecodedLoader"]


class DecodedLoader:
    """Yields ``(images float32 (B, C, size, size) in 0..1, labels int64)`` on ``device``.

    Args:
        dataset: the decoded folder (its uint8 images are moved to ``device`` once).
        batch_size: samples per batch *per process*.
        size: output side in pixels.
        transform: training: the random-resized crop and flip to draw (its ``size`` must be
            ``size``; resampling is always antialiased bilinear); ``None``: evaluation, the
            whole image resized to ``size``.
        shuffle, drop_last, device, seed, rank, world_size: as for
            :class:`~reslab.data.loaders.TensorLoader`.
    """

    def __init__(
        self,
        dataset: DecodedFolderDataset,
        batch_size: int,
        *,
        size: int,
        transform: TrainTransform | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if transform is not None and transform.size != size:
            raise ValueError(f"the transform makes {transform.size} px crops, not {size}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.batch_size, self.size, self.transform = batch_size, int(size), transform
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.global_batch = batch_size * world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return global_batches(len(self.images), self.global_batch, self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches(0)

    def draws(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """This epoch's ``(boxes (B, 4) top/left/height/width, flips (B,))`` of samples
        ``indices``."""
        side = self.dataset.presize
        if self.transform is None:
            raise ValueError("draws: an evaluation loader has no random crops")
        boxes, flips = [], []
        for i in indices:
            g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch, int(i)))
            box, flip = self.transform.draw(side, side, g)
            boxes.append(box)
            flips.append(flip)
        return torch.tensor(boxes, dtype=torch.int64), torch.tensor(flips, dtype=torch.bool)

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate this epoch's batches from batch ``start`` on (for resuming mid-epoch)."""
        order, _ = epoch_order(len(self.images), self.seed, self.epoch, self.shuffle)
        on_device = order.to(self.device)  # once per epoch, not a copy per batch
        spans = process_spans(
            start, len(self), self.global_batch, len(order), self.rank, self.world_size
        )
        for first, last in spans:
            idx, device_idx = order[first:last], on_device[first:last]
            x = self.images[device_idx]
            if self.transform is not None:
                boxes, flips = self.draws(idx.tolist())
                x = resized_crops(x, boxes, self.size, flips)
            elif self.size != x.shape[-1]:
                x = resize_images(x, self.size)
            else:
                x = x.float()
            yield x.div_(255), self.labels[device_idx]
