"""Images inside the page: PNG bytes, figures, arrays and files as ``data:`` URIs.

A report is one file: every image is embedded, so it opens offline and survives being
mailed. Files are recognised by their content (PNG, JPEG, GIF, WebP, SVG), not their name.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from reslab.analysis.overlay import figure_png
from reslab.analysis.report.html import Markup, element, escape, join

__all__ = [
    "MAX_IMAGE_BYTES",
    "array_png",
    "data_uri",
    "figure_html",
    "file_image_bytes",
    "image_html",
    "image_mime",
]

MAX_IMAGE_BYTES = 20 * 2**20  # a figure file larger than this is refused, not embedded

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_mime(data: bytes) -> str | None:
    """The MIME type of an image's bytes (PNG, JPEG, GIF, WebP, SVG), or None."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


def data_uri(data: bytes, mime: str | None = None) -> str:
    """``data:<mime>;base64,…`` for image bytes (the type read from the content)."""
    mime = mime or image_mime(data)
    if mime is None:
        raise ValueError("not a PNG, JPEG, GIF, WebP or SVG image")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_html(data: bytes, alt: str, *, width: int | None = None) -> Markup:
    """An ``<img>`` with the image embedded (``alt`` escaped)."""
    src = escape(data_uri(data))
    size = f' width="{int(width)}"' if width else ""
    return Markup(f'<img src="{src}" alt="{escape(alt)}"{size}>')


def figure_html(fig, alt: str, caption: str | Markup | None = None, *, dpi: int = 100) -> Markup:
    """A matplotlib figure as an embedded PNG inside ``<figure>``, with an optional caption."""
    parts = [image_html(figure_png(fig, dpi=dpi), alt)]
    if caption:
        parts.append(element("figcaption", caption))
    return element("figure", join(parts))


def array_png(pixels: np.ndarray, *, min_side: int = 0, max_side: int | None = None) -> bytes:
    """An ``(H, W, 3)`` uint8 array as PNG bytes. Small images are enlarged (nearest
    neighbour, whole multiples: they stay crisp) until the shorter side is at least
    ``min_side``; large ones shrunk until the shorter side is at most ``max_side``."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    short = max(1, min(image.size))
    factor = max(1, -(-min_side // short))
    if factor > 1:
        size = (image.width * factor, image.height * factor)
        image = image.resize(size, Image.Resampling.NEAREST)
    elif max_side is not None and short > max_side:
        scale = max_side / short
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def file_image_bytes(path: Path) -> bytes:
    """An image file's bytes, checked: it exists, is not too large and is an image."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"{path}: {size / 2**20:.1f} MB, too large to embed in a report")
    data = path.read_bytes()
    if image_mime(data) is None:
        raise ValueError(f"{path}: not a PNG, JPEG, GIF, WebP or SVG image")
    return data
