"""Downloads that become files only once complete and verified.

A download streams into a temporary file beside its destination, hashed on the way; only a
complete file whose digest matches is renamed into place. An interrupted, truncated or
tampered download therefore never becomes a file that later runs would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from reslab.files.atomic import fsync_dir
from reslab.files.digest import file_digest

__all__ = ["DownloadError", "download"]


class DownloadError(OSError):
    """A download that failed, was truncated, or did not match its checksum."""


def _matches(digest: str, expected: str, prefix: bool) -> bool:
    return digest.startswith(expected) if prefix else digest == expected


def download(
    url: str,
    dest: str | Path,
    *,
    digest: tuple[str, str],
    prefix_only: bool = False,
    progress: bool = True,
) -> Path:
    """Fetch ``url`` into ``dest`` once, verified, and return ``dest``.

    Args:
        url: ``http(s)://`` or ``file://``.
        dest: where the file goes; an existing file that verifies is used as it is.
        digest: ``(algorithm, hex digest)``, e.g. ``("sha256", "…")`` or ``("md5", "…")``.
        prefix_only: the hex digest is only a prefix (torch.hub file names carry 8+ digits).
        progress: show a tqdm bar.
    """
    algorithm, expected = digest[0], digest[1].lower()
    dest = Path(dest)
    if dest.is_file() and _matches(file_digest(dest, algorithm), expected, prefix_only):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.urandom(4).hex()}.tmp")
    try:
        got = _stream(url, tmp, algorithm, dest.name, progress)
        if not _matches(got, expected, prefix_only):
            shown = f"{expected}…" if prefix_only else expected
            raise DownloadError(
                f"{url}: {algorithm} mismatch (got {got}, expected {shown}); "
                "the download was discarded"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)
    return dest


def _stream(url: str, tmp: Path, algorithm: str, name: str, progress: bool) -> str:
    """Copy ``url`` into ``tmp``; return the digest of what was received."""
    from tqdm.auto import tqdm

    h = hashlib.new(algorithm)
    received = total = 0
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
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
        got = received + len(err.partial)
        raise DownloadError(f"{url}: download truncated ({got} bytes received)") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        if isinstance(err, DownloadError):
            raise
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"{url}: cannot download ({reason}); are you online?") from None
    if total and received != total:
        raise DownloadError(f"{url}: download truncated ({received} of {total} bytes)")
    return h.hexdigest()
