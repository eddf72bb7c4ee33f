"""Where weights files come from: local paths, and URLs with a checksum (cached once).

Downloads land in the cache's ``weights/`` folder (``$RESLAB_CACHE/weights``, else
``~/.cache/reslab/weights``), verified before they become cache entries
(:func:`reslab.files.download`). A URL must carry its checksum: a ``#sha256=<64 hex>``
fragment, or torch.hub's file-name convention (``resnet50-0676ba61.pth``, a digest prefix,
as torchvision's URLs do) — in which case a full sha256 given by the caller is preferred.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from reslab.files import DownloadError, cache_dir, download, file_sha256
from reslab.weights.files import WeightsError

__all__ = [
    "cached_url_path",
    "download_weights",
    "parse_url_checksum",
    "verify_sha256",
    "weights_dir",
]

# torch.hub's convention: ``name-<sha256 prefix>.ext`` (what torchvision's URLs use).
HUB_HASH = re.compile(r"-([a-f0-9]{8,64})\.")
SHA256 = re.compile(r"[a-f0-9]{64}")


def weights_dir() -> Path:
    """Where downloaded and converted weights are kept."""
    return cache_dir("weights")


def parse_url_checksum(url: str) -> tuple[str, str | None, str | None]:
    """Split ``url`` into ``(url without fragment, sha256, hash prefix)``.

    A full digest comes from a ``#sha256=<64 hex>`` fragment; otherwise torch.hub's file-name
    convention (``resnet50-0676ba61.pth``) gives a prefix.
    """
    base, _, fragment = url.partition("#")
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        value = value.strip().lower()
        if key.strip().lower() != "sha256" or not SHA256.fullmatch(value):
            raise WeightsError(f"{url}: expected a '#sha256=<64 hex digits>' fragment")
        sha256 = value
    name = Path(urllib.parse.urlparse(base).path).name
    match = HUB_HASH.search(name)
    prefix = match.group(1) if match and sha256 is None else None
    return base, sha256, prefix


def cached_url_path(url: str, sha256: str | None = None) -> Path:
    """Where the download of ``url`` is kept in the cache."""
    base, url_sha, _ = parse_url_checksum(url)
    sha256 = sha256 or url_sha
    name = Path(urllib.parse.urlparse(base).path).name or "weights"
    if sha256 is not None and sha256[:8] not in name:
        # Two URLs may share a file name; the digest keeps their cache entries apart.
        stem, dot, suffix = name.partition(".")
        name = f"{stem}-{sha256[:12]}{dot}{suffix}"
    return weights_dir() / name


def download_weights(url: str, *, sha256: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` into the weights cache once, verified, and return the file.

    Args:
        url: ``http(s)://`` or ``file://``, with a ``#sha256=…`` fragment or a torch.hub-style
            ``name-<hash>.ext`` file name when ``sha256`` is not given.
        sha256: the full expected digest (checked instead of a file-name prefix).
        progress: show a tqdm bar.

    A cached file is re-hashed on every use; one that no longer matches is downloaded again.
    """
    base, url_sha, prefix = parse_url_checksum(url)
    sha256 = (sha256 or url_sha or "").lower() or None
    expected = sha256 if sha256 is not None else prefix  # the full digest, else the prefix
    if expected is None:
        raise WeightsError(f"{url}: a weights URL needs a checksum; append '#sha256=<64 hex>'")
    dest = cached_url_path(url, sha256)
    digest = ("sha256", expected)
    try:
        return download(base, dest, digest=digest, prefix_only=sha256 is None, progress=progress)
    except DownloadError as err:
        raise WeightsError(str(err)) from None


def verify_sha256(path: Path, sha256: str) -> Path:
    """``path`` if its content has digest ``sha256``, else a :class:`WeightsError`."""
    if file_sha256(path) != sha256.lower():
        raise WeightsError(f"{path}: corrupt (sha256 differs from the expected {sha256[:12]}…)")
    return path
