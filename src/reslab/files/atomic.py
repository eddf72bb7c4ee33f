"""Atomic writes: readers see the old file or the new one, never half of one.

``atomic_write(path, write)`` gives ``write`` a fresh temporary path in the same folder, then
fsyncs the file, renames it onto ``path`` (the commit) and fsyncs the folder, so the rename
itself survives a power cut. Temporary files are named ``.<name>.<8 hex digits>.tmp``; a
writer that was killed leaves one behind, and :func:`sweep_temp_files` removes exactly such
names (no other hidden file) when the folder's single writer opens it again.

The target is replaced, never written through: a link at ``path`` is replaced by the new file
(its target is left alone), and a target that is not a regular file or a link (a device, a
FIFO, a socket, a folder) is refused.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "NotAFileError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_replaceable",
    "file_kind",
    "fsync_dir",
    "is_temp_file",
    "sweep_temp_files",
]

TEMP_SUFFIX = ".tmp"
TEMP_HEX_DIGITS = 8  # secrets.token_hex(4)
_TEMP_NAME = re.compile(rf"^\..+\.[0-9a-f]{{{TEMP_HEX_DIGITS}}}\.tmp$")


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 minus the process umask.

    The umask is read from ``/proc/self/status`` (Linux): setting it to read it back, the
    usual trick, changes it for every thread of the process for a moment.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(TEMP_HEX_DIGITS // 2)}{TEMP_SUFFIX}")


def is_temp_file(path: str | Path) -> bool:
    """Whether ``path`` is named as the atomic writer names its temporary files."""
    return _TEMP_NAME.match(Path(path).name) is not None


class NotAFileError(OSError):
    """An output target that exists and is not a regular file (a device, FIFO, socket or
    folder): it is never replaced."""


def check_replaceable(path: str | Path) -> None:
    """Raise :class:`NotAFileError` when ``path`` exists and is neither a regular file nor a
    link (a link is replaced, not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise NotAFileError(
            f"{path}: exists and is not a regular file ({file_kind(mode)}); not replaced"
        )


def file_kind(mode: int) -> str:
    """What ``mode`` (from ``os.stat``) is, in words."""
    kinds = (
        (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link"), (stat.S_ISREG, "a file"),
    )  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "not a file")


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it onto ``path``.

    Args:
        path: the file to (re)place; its folder is created if missing.
        write: writes the whole content to the path it is given (``fig.savefig``,
            ``torch.save``, ``Path.write_bytes``…).

    The file gets the mode a plain ``open()`` would give it (0666 minus the umask).
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        write(str(tmp))
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        check_replaceable(path)  # again: it may have appeared while ``write`` ran
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any, *, indent: int | None = 2) -> Path:
    """Write ``value`` as JSON to ``path`` atomically (NaN and infinity allowed, as Python's)."""
    return atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def sweep_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files killed writers left in ``folder``; return what was removed.

    Call it only while holding the folder's single-writer lock: another writer's temporary
    file is in use.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if is_temp_file(entry) and stat.S_ISREG(os.lstat(entry).st_mode):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
