"""Image folders decoded once: every image brought to a square presize, held in memory as uint8.

Decoding JPEGs every epoch, on the same cores that train, made an Imagenette epoch wait on the
decoder. :func:`decode_image_folder` decodes each image once, resizes its short side to the
presize and centre-crops a square (:func:`~reslab.data.transforms.presize_image`, fastai's
"presizing"), and stores the result in reslab's cache (:mod:`reslab.files.cache`: safetensors,
checksummed, written atomically). The entry's key covers every file (path, size, modification
time), the channel count and the presize, so a changed, added or removed file, or another
presize, makes a new entry; an unchanged folder is read back in about a second. Training then
crops and resizes whole batches with tensor ops (:class:`~reslab.data.loaders.DecodedLoader`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from reslab.data.folder import scan_image_folder
from reslab.data.images import ImageDecodeError, load_image
from reslab.data.transforms import presize_image
from reslab.files import (
    DamagedCacheError,
    cache_dir,
    cache_key,
    read_array_cache,
    write_array_cache,
)

__all__ = ["DECODED_CACHE", "DecodedFolderDataset", "decode_image_folder", "decoded_cache_path"]

DECODED_CACHE = "decoded"  # the cache's folder for decoded image folders
# Decoded images may take at most this share of the memory the system has available.
MEMORY_SHARE = 0.6


class DecodedFolderDataset(torch.utils.data.Dataset):
    """An image folder decoded at a square presize: ``images`` uint8 ``(N, C, P, P)``.

    Args:
        images: the decoded images.
        labels: int64 ``(N,)``.
        class_names: one name per label value.
        paths: the file each image came from.
        name: a short description (logs, checkpoints).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        class_names: Sequence[str],
        paths: Sequence[Path],
        name: str = "",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be uint8 (N, C, P, P), got {tuple(images.shape)}")
        if labels.shape != (len(images),) or len(paths) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels, {len(paths)} paths")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.paths = [Path(p) for p in paths]
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def num_channels(self) -> int:
        return self.images.shape[1]

    @property
    def presize(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: Sequence[int] | Tensor) -> DecodedFolderDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        paths = [self.paths[i] for i in idx.tolist()]
        return DecodedFolderDataset(
            self.images[idx], self.labels[idx], self.class_names, paths, self.name
        )

    def digest(self) -> str:
        """A short digest of the files (path, size, modification time), labels, classes and
        presize (keys caches built on this data)."""
        h = hashlib.sha256(f"{self.class_names}|{self.presize}|{self.num_channels}".encode())
        for path, label in zip(self.paths, self.labels.tolist()):
            st = path.stat()
            h.update(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}".encode())
        return h.hexdigest()[:16]


def _folder_key(root: Path, paths: list[Path], channels: int, presize: int) -> str:
    files = []
    for p in paths:
        st = p.stat()
        files.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return cache_key("decoded-folder-1", str(root), channels, presize, files)


def decoded_cache_path(root: str | Path, presize: int, key: str) -> Path:
    """Where the decoded copy of ``root`` at ``presize`` with ``key`` lives in the cache."""
    root = Path(root).resolve()
    return cache_dir(DECODED_CACHE, f"{root.parent.name}-{root.name}-{presize}px-{key}.safetensors")


def _check_memory(root: Path, n: int, channels: int, presize: int) -> None:
    need = n * channels * presize * presize
    try:
        with open("/proc/meminfo") as fh:
            avail = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvail"))
    except (OSError, StopIteration, ValueError):
        return
    if need > MEMORY_SHARE * avail:
        raise ValueError(
            f"{root}: {n} images at {presize} px take {need / 2**30:.1f} GiB in memory, more "
            f"than {MEMORY_SHARE:.0%} of the {avail / 2**30:.1f} GiB available; pass a smaller "
            "--presize, or --no-cache-images to decode every epoch"
        )


def decode_image_folder(
    root: str | Path,
    presize: int,
    *,
    channels: int = 3,
    on_error: str = "raise",
    progress: bool = True,
    cache: bool = True,
) -> DecodedFolderDataset:
    """Decode ``root/<class>/<image>`` at ``presize`` x ``presize`` (cached; see the module).

    A damaged cache entry (truncated, altered, another entry's file) is reported in one line
    and decoded again. An unreadable image raises :class:`ImageDecodeError` naming it;
    ``on_error="skip"`` leaves it out.
    """
    if presize < 1:
        raise ValueError(f"presize must be positive, got {presize}")
    root = Path(root).resolve()
    paths, labels, classes, skipped = scan_image_folder(
        root, verify=on_error == "skip", on_error=on_error
    )
    _check_memory(root, len(paths), channels, presize)
    key = _folder_key(root, paths, channels, presize)
    where = decoded_cache_path(root, presize, key)
    arrays = None
    if cache:
        try:
            arrays = read_array_cache(where, key)
        except DamagedCacheError as err:
            print(f"reslab: {err}; decoding {root} again", file=sys.stderr)
    if arrays is None or not _consistent(arrays, len(paths), channels, presize):
        arrays = _decode(paths, channels, presize, on_error, progress, f"decode {root.name}")
        if cache:
            write_array_cache(where, arrays, key)
    kept = torch.from_numpy(arrays["kept"].astype(np.int64))
    skipped = skipped + [paths[i] for i in sorted(set(range(len(paths))) - set(kept.tolist()))]
    if skipped:
        print(f"{root}: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0].name}")
    y = torch.tensor(labels, dtype=torch.int64)[kept]
    kept_paths = [paths[i] for i in kept.tolist()]
    images = torch.from_numpy(arrays["images"])
    return DecodedFolderDataset(images, y, classes, kept_paths, f"{root.parent.name}/{root.name}")


def _consistent(arrays: dict[str, np.ndarray], n: int, channels: int, presize: int) -> bool:
    images, kept = arrays.get("images"), arrays.get("kept")
    if images is None or kept is None or images.dtype != np.uint8 or kept.ndim != 1:
        return False
    if images.shape != (len(kept), channels, presize, presize):
        return False
    return bool(len(kept) == 0 or (kept.min() >= 0 and kept.max() < n))


def _decode(
    paths: list[Path], channels: int, presize: int, on_error: str, progress: bool, desc: str
) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    out = np.empty((len(paths), channels, presize, presize), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)

    def work(i: int) -> None:
        try:
            img = load_image(paths[i], channels)
        except ImageDecodeError:
            if on_error != "skip":
                raise
            ok[i] = False
            return
        out[i] = presize_image(img, presize).numpy()

    # PIL and torch release the GIL while decoding and resizing, so threads run in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in tqdm(
            pool.map(work, range(len(paths))),
            total=len(paths),
            desc=desc,
            disable=not progress,
            leave=False,
        ):
            pass
    kept = np.flatnonzero(ok).astype(np.int64)
    images = out if ok.all() else np.ascontiguousarray(out[kept])
    return {"images": images, "kept": kept}
