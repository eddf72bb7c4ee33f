"""Reading one file of a run or experiment folder safely: it must stay inside the folder
once links are resolved, be a regular file (a FIFO would block a reader for ever) and, for
JSON, parse; every refusal is a :class:`RunFileError` whose message names the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_JSON_BYTES",
    "RunFileError",
    "existing_member",
    "member_path",
    "read_json_file",
    "read_json_member",
]

MAX_JSON_BYTES = 64 * 2**20  # a record larger than this is not one reslab wrote


class RunFileError(ValueError):
    """A file of a run or experiment folder that is damaged, foreign or misplaced; the message
    names the file and what is wrong."""


def member_path(folder: str | Path, name: str, *, directory: bool = False) -> Path:
    """``folder/name`` once checked: absent, or (links resolved) inside ``folder`` and a
    regular file (a folder when ``directory``)."""
    folder = Path(folder)
    path = folder / name
    if not os.path.lexists(path):
        return path
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise RunFileError(f"{path}: a broken or looping link") from None
    if not real.is_relative_to(folder.resolve()):
        raise RunFileError(f"{path}: links outside {folder}; not read")
    mode = real.stat().st_mode
    if directory and not stat.S_ISDIR(mode):
        raise RunFileError(f"{path}: expected a folder")
    if not directory and not stat.S_ISREG(mode):
        raise RunFileError(f"{path}: not a regular file")
    return path


def read_json_file(path: Path) -> Any:
    """The JSON value of the (already checked) file ``path``; one-line errors naming it."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise RunFileError(f"{path}: {size / 2**20:.0f} MB, too large for a reslab record")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise RunFileError(f"{path}: not UTF-8 text") from None
    except ValueError as err:
        raise RunFileError(f"{path}: not valid JSON ({err})") from None


def read_json_member(folder: str | Path, name: str) -> Any | None:
    """The JSON value of ``folder/name``, or None when there is no such file."""
    path = member_path(folder, name)
    return read_json_file(path) if path.exists() else None


def existing_member(folder: str | Path, name: str) -> Path | None:
    """``folder/name`` if it exists (checked as :func:`member_path`), else None."""
    path = member_path(folder, name)
    return path if path.exists() else None
