"""Image-folder data sets: ``ROOT/<split>/<class>/<image>`` (ImageNet, Imagenette, CIFAR JPEGs).

Large images are decoded per sample in DataLoader workers (:class:`ImageFolderDataset`);
small ones (28–64 px) are decoded once into a uint8 tensor and cached
(:func:`read_small_image_folder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor

from reslab.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from reslab.files import atomic_write_bytes, cache_dir

__all__ = [
    "ImageFolderDataset",
    "class_folders",
    "read_small_image_folder",
    "read_small_image_folder_with_paths",
    "scan_image_folder",
]


def scan_image_folder(
    root: str | Path, *, verify: bool = False, on_error: str = "raise"
) -> tuple[list[Path], list[int], list[str], list[Path]]:
    """List ``root/<class>/*`` images: ``(paths, labels, class names, skipped files)``.

    Classes are the sub-folders in sorted order. With ``verify`` every file's header is
    checked; a bad file raises :class:`ImageDecodeError` naming it, or with
    ``on_error="skip"`` is left out and returned in ``skipped``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    classes = class_folders(root)
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[Path] = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if verify and not _header_ok(path):
                if on_error == "raise":
                    raise ImageDecodeError(
                        f"{path}: not a readable image (pass on_error='skip' / --skip-bad-images "
                        "to leave such files out)"
                    )
                skipped.append(path)
                continue
            paths.append(path)
            labels.append(label)
    if not paths:
        raise ValueError(f"{root}: no image files found in its class folders")
    return paths, labels, classes, skipped


def class_folders(root: Path) -> list[str]:
    """The class names of a split folder: its sub-folders, sorted (label i = the i-th)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _header_ok(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for corrupt files
        return False


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images decoded on demand, returned as ``(uint8 (C, H, W), label)``.

    Each sample's augmentation is drawn from a generator seeded by ``(seed, epoch, index)``,
    so results do not depend on worker count or order, and a resumed run repeats them.

    Args:
        root: the split folder (``ROOT/train``), holding one folder per class.
        transform: ``transform(img, generator) -> img`` producing a fixed-size image.
        channels: 3 (RGB) or 1 (grey).
        on_error: ``"raise"`` on an unreadable file (named), or ``"skip"`` it (counted).
        verify: check every file's header when building the list.
        seed: base seed of the per-sample augmentation.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        *,
        channels: int = 3,
        on_error: str = "raise",
        verify: bool = True,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.paths, labels, self.class_names, self.skipped = scan_image_folder(
            root, verify=verify, on_error=on_error
        )
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.transform = transform
        self.num_channels = channels
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        img = load_image(self.paths[index], channels=self.num_channels)
        if self.transform is not None:
            g = torch.Generator().manual_seed(mix_seeds(self.seed, self.epoch, index))
            img = self.transform(img, g)
        return img, int(self.labels[index])

    def digest(self) -> str:
        """A short digest of the files (path, size, modification time), labels and class names."""
        h = hashlib.sha256(json.dumps(self.class_names).encode())
        for path, label in zip(self.paths, self.labels.tolist()):
            st = path.stat()
            h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}".encode())
        return h.hexdigest()[:16]

    def with_transform(
        self, transform: Callable[[Tensor, torch.Generator], Tensor]
    ) -> ImageFolderDataset:
        """The same samples through another transform (this data set is left as it is: a
        loader reads its transform at every sample, so loaders must not share one)."""
        view = object.__new__(ImageFolderDataset)
        view.__dict__.update(self.__dict__)
        view.transform = transform
        return view

    def subset(self, indices: Sequence[int] | Tensor) -> ImageFolderDataset:
        """A view on some samples (same transform); labels and class names kept."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        sub = object.__new__(ImageFolderDataset)
        sub.__dict__.update(self.__dict__)
        sub.paths = [self.paths[i] for i in idx.tolist()]
        sub.labels = self.labels[idx]
        return sub


def mix_seeds(*values: int) -> int:
    """A 63-bit seed mixed from several integers (e.g. the run seed and the epoch)."""
    h = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def read_small_image_folder(
    root: str | Path,
    *,
    channels: int = 3,
    progress: bool = True,
    cache: bool = True,
    on_error: str = "raise",
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode a folder of equal-sized small images into ``(uint8 (N, C, H, W), labels, classes)``.

    The decoded tensor is cached (safetensors, keyed by the folder's path, file list and
    modification times) so the next run loads it in a fraction of a second. An unreadable
    file raises :class:`ImageDecodeError` naming it; ``on_error="skip"`` leaves such files out.
    """
    images, labels, classes, _ = read_small_image_folder_with_paths(
        root, channels=channels, progress=progress, cache=cache, on_error=on_error
    )
    return images, labels, classes


def read_small_image_folder_with_paths(
    root: str | Path,
    *,
    channels: int = 3,
    progress: bool = True,
    cache: bool = True,
    on_error: str = "raise",
) -> tuple[Tensor, Tensor, list[str], list[Path]]:
    """:func:`read_small_image_folder`, plus the file each image was decoded from (in order)."""
    from safetensors.torch import load_file, save

    root = Path(root).resolve()
    paths, labels, classes, skipped = scan_image_folder(
        root, verify=on_error == "skip", on_error=on_error
    )
    if skipped:
        print(f"{root}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0].name}")
    key = _folder_key(root, paths, channels)
    cached = cache_dir("decoded", f"{root.name}-{key}.safetensors")
    if cache and cached.is_file():
        try:
            t = load_file(str(cached))
            classes = json.loads(t["classes"].numpy().tobytes().decode())
            return t["images"], t["labels"], classes, paths
        except Exception:  # a damaged cache file is rebuilt, never trusted
            cached.unlink(missing_ok=True)
    images = _decode_all(paths, channels, progress, desc=f"decode {root.name}")
    y = torch.tensor(labels, dtype=torch.int64)
    if cache:
        blob = torch.frombuffer(bytearray(json.dumps(classes).encode()), dtype=torch.uint8)
        tensors = {"images": images, "labels": y, "classes": blob}
        atomic_write_bytes(cached, save(tensors))
    return images, y, classes, paths


def _folder_key(root: Path, paths: list[Path], channels: int) -> str:
    h = hashlib.sha256(f"{root}|{channels}|{len(paths)}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _decode_all(paths: list[Path], channels: int, progress: bool, desc: str) -> Tensor:
    from tqdm.auto import tqdm

    first = load_image(paths[0], channels)
    out = torch.empty((len(paths), *first.shape), dtype=torch.uint8)

    def work(i: int) -> None:
        img = load_image(paths[i], channels)
        if img.shape != first.shape:
            raise ValueError(
                f"{paths[i]}: size {tuple(img.shape[1:])} differs from {tuple(first.shape[1:])}; "
                "in-memory folders need equal-sized images"
            )
        out[i] = img

    # PIL releases the GIL while decoding, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in tqdm(
            pool.map(work, range(len(paths))),
            total=len(paths),
            desc=desc,
            disable=not progress,
            leave=False,
        ):
            pass
    return out
