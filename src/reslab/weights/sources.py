"""Where weights come from: local files, URLs with a checksum, named tags and TF.js folders.

Downloads land in the cache (``$RESLAB_CACHE``, else ``$XDG_CACHE_HOME/reslab`` or
``~/.cache/reslab``, under ``weights/``). A download is streamed into a temporary file in the
same folder, hashed on the way, and renamed into place only when complete and verified, so an
interrupted or tampered download never becomes a cache entry that later runs would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from reslab.weights.io import WeightsError

__all__ = [
    "CACHE_ENV",
    "cache_dir",
    "download_url",
    "fetch_source",
    "file_sha256",
    "parse_url_checksum",
    "weights_dir",
]

CACHE_ENV = "RESLAB_CACHE"
# torch.hub's convention: ``name-<sha256 prefix>.ext`` (what torchvision's URLs use).
_HUB_HASH = re.compile(r"-([a-f0-9]{8,64})\.")
_SHA256 = re.compile(r"[a-f0-9]{64}")


def cache_dir() -> Path:
    """reslab's cache: ``$RESLAB_CACHE``, else ``$XDG_CACHE_HOME/reslab`` or ``~/.cache/reslab``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reslab"


def weights_dir() -> Path:
    """Where downloaded and converted weights are kept."""
    return cache_dir() / "weights"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_url_checksum(url: str) -> tuple[str, str | None, str | None]:
    """Split ``url`` into ``(url without fragment, sha256, hash prefix)``.

    A full digest comes from a ``#sha256=<64 hex>`` fragment; otherwise torch.hub's file-name
    convention (``resnet50-0676ba61.pth``) gives a prefix, checked as torchvision checks it.
    """
    base, _, fragment = url.partition("#")
    sha256 = None
    if fragment:
        key, _, value = fragment.partition("=")
        value = value.strip().lower()
        if key.strip().lower() != "sha256" or not _SHA256.fullmatch(value):
            raise WeightsError(f"{url}: expected a '#sha256=<64 hex digits>' fragment")
        sha256 = value
    name = Path(urllib.parse.urlparse(base).path).name
    match = _HUB_HASH.search(name)
    prefix = match.group(1) if match and sha256 is None else None
    return base, sha256, prefix


def _check_digest(digest: str, sha256: str | None, prefix: str | None) -> bool:
    if sha256 is not None:
        return digest == sha256
    return prefix is not None and digest.startswith(prefix)


def _cache_name(url: str, sha256: str | None) -> str:
    name = Path(urllib.parse.urlparse(url).path).name or "weights"
    if sha256 is not None and sha256[:8] not in name:
        # Two URLs may share a file name; the digest keeps their cache entries apart.
        stem, dot, suffix = name.partition(".")
        name = f"{stem}-{sha256[:12]}{dot}{suffix}"
    return name


def download_url(
    url: str,
    *,
    sha256: str | None = None,
    hash_prefix: str | None = None,
    dest_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` into the cache once, verified, and return the file.

    Args:
        url: ``http(s)://`` or ``file://``; a ``#sha256=…`` fragment or a torch.hub-style
            ``name-<hash>.ext`` file name supplies the checksum when none is passed.
        sha256: the full expected digest.
        hash_prefix: a prefix of the digest (torchvision's URLs carry one).
        dest_dir: cache folder (default :func:`weights_dir`).
        progress: show a tqdm bar.

    A cached file is re-hashed on every use; one that no longer matches is downloaded again.
    """
    base, url_sha, url_prefix = parse_url_checksum(url)
    sha256 = (sha256 or url_sha or "").lower() or None
    hash_prefix = (hash_prefix or url_prefix or "").lower() or None
    if sha256 is None and hash_prefix is None:
        raise WeightsError(
            f"{url}: a weights URL needs a checksum; append '#sha256=<64 hex digits>'"
        )
    dest = Path(dest_dir or weights_dir()) / _cache_name(base, sha256)
    if dest.is_file() and _check_digest(file_sha256(dest), sha256, hash_prefix):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = _stream(base, fd, dest.name, progress)
        if not _check_digest(digest, sha256, hash_prefix):
            expected = sha256 or f"{hash_prefix}…"
            raise WeightsError(
                f"{base}: checksum mismatch (sha256 {digest}, expected {expected}); "
                "the download was discarded"
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _stream(url: str, fd: int, name: str, progress: bool) -> str:
    """Copy ``url`` into the open file ``fd``; return the sha256 of what was received."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            with tqdm(
                total=total or None,
                unit="B",
                unit_scale=True,
                desc=f"download {name}",
                disable=not progress,
                leave=False,
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except http.client.IncompleteRead as err:
        raise WeightsError(
            f"{url}: download truncated ({received + len(err.partial)} bytes received)"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise WeightsError(f"{url}: cannot download ({reason}); are you online?") from None
    if total and received != total:
        raise WeightsError(f"{url}: download truncated ({received} of {total} bytes)")
    return h.hexdigest()


def fetch_source(source: str, *, model_name: str | None = None) -> Path:
    """Return a local weights file for ``source``.

    Args:
        source: a file; a Keras TensorFlow.js folder (``model.json`` + shards, converted once
            into the cache); a URL with a checksum; or a known tag, ``MODEL@TAG`` or a bare
            ``TAG`` (see ``reslab weights list``).
        model_name: the model the weights are for, so that a bare tag like
            ``IMAGENET1K_V1`` can be resolved.
    """
    text = str(source).strip()
    if "://" in text:
        return download_url(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.json").is_file():
            from reslab.weights.keras import convert_tfjs_folder_cached

            return convert_tfjs_folder_cached(path)
        raise WeightsError(f"{text}: a folder, but not a TensorFlow.js model (no model.json)")
    from reslab.weights.tags import find_tag

    tag = find_tag(text, model_name)
    if tag is not None:
        return tag.fetch()
    looks_like_path = os.sep in text or Path(text).suffix in (".safetensors", ".pth", ".pt", ".bin")
    if looks_like_path:
        raise WeightsError(f"{text}: no such weights file")
    if model_name is not None:
        from reslab.weights.tags import list_tags

        known = ", ".join(t.tag for t in list_tags(model_name))
        if known:
            raise WeightsError(
                f"{text}: not a weights file, URL or tag of {model_name} (its tags: {known})"
            )
    raise WeightsError(f"{text}: not a weights file, URL or known tag (see `reslab weights list`)")
