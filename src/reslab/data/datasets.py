"""``load_dataset``: one entry point for Fashion-MNIST, CIFAR-10 and image folders."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import Tensor

from reslab.data.images import IMAGE_EXTENSIONS, load_image

if TYPE_CHECKING:
    from reslab.data.decoded import DecodedFolderDataset
    from reslab.data.folder import ImageFolderDataset

__all__ = [
    "KNOWN_DATASETS",
    "TensorImageDataset",
    "load_dataset",
    "select_classes",
    "split_indices",
]

KNOWN_DATASETS = {
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "imagenette": "imagenette",
}
SMALL_IMAGE_MAX = 64  # images up to this side live in memory; larger ones stream from disk
# What load_dataset returns: the images in memory, or files decoded on demand.
ImageDataset: TypeAlias = "TensorImageDataset | ImageFolderDataset | DecodedFolderDataset"
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "valid"), "valid": ("valid", "val")}


class TensorImageDataset(torch.utils.data.Dataset):
    """A small-image data set held in memory: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64.

    Args:
        images: uint8 tensor of shape ``(N, C, H, W)``.
        labels: int64 tensor of shape ``(N,)``.
        class_names: one name per label value.
        name: a short description (shown in logs and stored in checkpoints).
        paths: the file each image was decoded from (an image folder's), or ``None``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: Sequence[str],
        name: str = "",
        paths: Sequence[Path] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (len(images),):
            raise ValueError(f"{len(images)} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.name = name
        if paths is not None and len(paths) != len(images):
            raise ValueError(f"{len(images)} images but {len(paths)} file paths")
        self.paths = None if paths is None else list(paths)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.images.shape[2:]  # images are (N, C, H, W), checked above
        return (height, width)

    def subset(self, indices: Sequence[int] | Tensor) -> TensorImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        paths = None if self.paths is None else [self.paths[i] for i in idx.tolist()]
        return TensorImageDataset(
            self.images[idx], self.labels[idx], self.class_names, self.name, paths
        )

    def digest(self) -> str:
        """A short digest of the pixels, labels and class names (keys caches built on them)."""
        h = hashlib.sha256(json.dumps(self.class_names).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels scaled to 0–1 (for input normalisation)."""
        c = self.num_channels
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for chunk in self.images.split(4096):  # float64 of 60k images at once would be large
            x = chunk.to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)
            total += x.sum(1)
            total_sq += (x * x).sum(1)
        n = self.images[:, 0].numel()
        mean = total / n
        std = (total_sq / n - mean * mean).clamp_min(0).sqrt()
        return mean.tolist(), std.tolist()


def split_indices(n: int, valid_pct: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A random ``(train, valid)`` split of ``range(n)``, ``valid`` holding ``valid_pct`` of it."""
    if not 0.0 < valid_pct < 1.0:
        raise ValueError(f"valid_pct must be between 0 and 1, got {valid_pct}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid = int(round(n * valid_pct))
    return perm[n_valid:].sort().values, perm[:n_valid].sort().values


def select_classes(dataset: ImageDataset, classes: Sequence[str | int]) -> ImageDataset:
    """Keep only ``classes`` (names or label indices), relabelled 0..k-1 in the order given."""
    names = dataset.class_names
    picked: list[int] = []
    for c in classes:
        if isinstance(c, int) or (isinstance(c, str) and c.isdigit() and c not in names):
            i = int(c)
            if not 0 <= i < len(names):
                raise ValueError(f"class index {i} out of range (0..{len(names) - 1})")
        elif c in names:
            i = names.index(c)
        else:
            raise ValueError(f"unknown class {c!r}; classes are: {', '.join(names)}")
        if i in picked:
            raise ValueError(f"class {c!r} given twice")
        picked.append(i)
    if not picked:
        raise ValueError("classes= must name at least one class")
    old = dataset.labels
    mask = torch.zeros_like(old, dtype=torch.bool)
    remap = torch.full((len(names),), -1, dtype=torch.int64)
    for new, i in enumerate(picked):
        mask |= old == i
        remap[i] = new
    sub = dataset.subset(mask.nonzero().flatten())
    sub.labels = remap[sub.labels]
    sub.class_names = [names[i] for i in picked]
    return sub


def load_dataset(
    name_or_path: str | Path,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    classes: Sequence[str | int] | None = None,
    valid_pct: float = 0.0,
    seed: int = 0,
    on_error: str = "raise",
    download: bool = True,
    progress: bool = True,
    presize: int | None = None,
) -> ImageDataset:
    """Load a data set split.

    Args:
        name_or_path: ``"fashion-mnist"``, ``"cifar10"``, ``"imagenette"`` (found in the data
            folders: :func:`~reslab.data.imagenette.find_imagenette`) or a folder with
            ``train/``, ``val/`` (or ``valid/``, ``test/``) sub-folders of class folders.
        split: ``"train"``, ``"valid"`` or ``"test"``. With ``valid_pct`` > 0, ``train`` and
            ``valid`` are the two parts of the training set; otherwise ``valid`` is the data
            set's own validation folder.
        data_dir: the first folder to search (then ``$RESLAB_DATA``, ``~/.cache/reslab``, …).
        classes: keep only these classes (names or indices), relabelled in the order given.
        valid_pct: fraction of the training set held out as ``valid`` (random, by ``seed``).
        seed: seed of the train/valid split.
        on_error: image folders: ``"raise"`` on an unreadable file or ``"skip"`` it.
        download: fetch the official files when they are not on disk (needs a connection).
        progress: show a bar while decoding a folder for the first time.
        presize: image folders: decode every image once at this square side (cached;
            :func:`~reslab.data.decoded.decode_image_folder`) and hold them in memory.

    Returns a :class:`TensorImageDataset` (images up to 64 px, without ``presize``), a
    :class:`~reslab.data.decoded.DecodedFolderDataset` (``presize``) or an
    :class:`~reslab.data.folder.ImageFolderDataset`; all have ``class_names`` and ``labels``.
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    base_split = "train" if (split == "valid" and valid_pct > 0) else split
    key = KNOWN_DATASETS.get(str(name_or_path).lower())
    if key == "imagenette":
        from reslab.data.imagenette import find_imagenette

        ds = _load_folder(find_imagenette(data_dir), base_split, on_error, progress, presize)
    elif key is not None:
        ds = _load_named(key, base_split, data_dir, download, progress)
    elif Path(name_or_path).expanduser().is_dir():
        ds = _load_folder(Path(name_or_path).expanduser(), base_split, on_error, progress, presize)
    else:
        raise ValueError(
            f"unknown data set {str(name_or_path)!r}: expected fashion-mnist, cifar10, imagenette "
            "or a folder with train/ and val/ class folders"
        )
    if classes:
        ds = select_classes(ds, classes)
    if valid_pct > 0 and split != "test":
        train_idx, valid_idx = split_indices(len(ds), valid_pct, seed)
        ds = ds.subset(train_idx if split == "train" else valid_idx)
    return ds


def _load_named(key: str, split: str, data_dir, download: bool, progress: bool):
    if split == "valid":
        raise ValueError(f"{key} has no separate validation split: pass valid_pct (e.g. 0.2)")
    if key == "fashion-mnist":
        from reslab.data.fashion_mnist import FASHION_MNIST_CLASSES, read_fashion_mnist

        x, y = read_fashion_mnist(split, data_dir, download)
        return TensorImageDataset(x, y, FASHION_MNIST_CLASSES, f"fashion-mnist/{split}")
    from reslab.data.cifar import read_cifar10

    x, y, names = read_cifar10(split, data_dir, download, progress)
    return TensorImageDataset(x, y, names, f"cifar10/{split}")


def _load_folder(
    root: Path, split: str, on_error: str, progress: bool, presize: int | None
) -> ImageDataset:
    from reslab.data.decoded import decode_image_folder
    from reslab.data.folder import ImageFolderDataset, read_small_image_folder_with_paths

    folder = next((root / s for s in SPLIT_FOLDERS[split] if (root / s).is_dir()), None)
    if folder is None:
        wanted = " or ".join(f"{s}/" for s in SPLIT_FOLDERS[split])
        raise FileNotFoundError(f"{root}: no {split} split (expected a {wanted} folder)")
    first = next(
        (
            p
            for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()  # not a FIFO: never read
        ),
        None,
    )
    if first is None:
        raise ValueError(f"{folder}: no image files found")
    ds: ImageDataset
    if presize:
        ds = decode_image_folder(folder, presize, on_error=on_error, progress=progress)
    elif max(load_image(first).shape[1:]) <= SMALL_IMAGE_MAX:
        x, y, names, paths = read_small_image_folder_with_paths(
            folder, channels=3, progress=progress, on_error=on_error
        )
        ds = TensorImageDataset(x, y, names, f"{root.name}/{folder.name}", paths)
    else:
        ds = ImageFolderDataset(folder, on_error=on_error)
    return ds if split == "train" else _label_as_train(ds, folder, root / "train")


def _label_as_train(ds, folder: Path, train: Path):
    """Number a val/test folder's classes as the train folder does: each folder's own sorted
    list would shift the labels of a split that lacks a class."""
    from reslab.data.folder import class_folders

    if not train.is_dir() or ds.class_names == (names := class_folders(train)):
        return ds
    unknown = [c for c in ds.class_names if c not in names]
    if unknown:
        raise ValueError(f"{folder}: classes the train/ folder does not have: {', '.join(unknown)}")
    ds.labels = torch.tensor([names.index(c) for c in ds.class_names])[ds.labels]
    ds.class_names = names
    return ds
