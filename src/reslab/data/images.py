"""Decode one image file into a tensor, whatever its mode, orientation or bit depth."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "load_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class ImageDecodeError(ValueError):
    """A file that is not a readable image (the message names the file)."""


def load_image(path: str | Path, channels: int = 3) -> Tensor:
    """Read an image as a ``uint8`` tensor of shape ``(channels, H, W)``.

    EXIF orientation is applied; grey, palette, RGBA (composited on white), CMYK and
    16-bit images are converted to ``channels`` = 3 (RGB) or 1 (luminance).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with _open_regular(path) as fh, Image.open(fh) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_8bit(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            img = img.convert("L" if channels == 1 else "RGB")
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: not an image file") from None
    except Image.DecompressionBombError as err:
        # PIL's guard against images that would take gigabytes once decoded.
        raise ImageDecodeError(f"{path}: image too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"{path}: cannot decode image ({err})") from None
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (or a link to one).

    A FIFO, device or socket is refused before anything is read from it: reading a FIFO
    that nobody writes to would wait for ever. The file is opened without blocking and then
    checked, so a path that is swapped for a FIFO between a check and the open cannot hang.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageDecodeError(f"{path}: is a folder, not an image file")
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(f"{path}: not a regular file ({_kind(mode)}), not read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _to_8bit(img):
    """Scale 16/32-bit integer and float images to 8 bits (PIL's convert would clip)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img
