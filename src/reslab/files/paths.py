"""Checking where output goes before any work is done, so a bad ``--out`` costs one line and
no minutes of loading data or models first."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OutputPathError", "check_output_dir", "check_output_file"]


class OutputPathError(OSError):
    """An output location that cannot be written (the message says why)."""


def _writable_ancestor(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a folder this process may write in."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputPathError(f"{path}: cannot write in {parent} (permission denied)")
            return


def check_output_dir(path: str | Path) -> Path:
    """``path`` if a folder can be created or written there; :class:`OutputPathError` if not."""
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: cannot write in this folder (permission denied)")
        return path
    _writable_ancestor(path)
    return path


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """``path`` if a file can be written there and it is none of the command's ``inputs``
    (a model or image it reads); :class:`OutputPathError` if not."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; give a file name")
    if path.exists() and any(
        Path(i).expanduser().exists() and path.samefile(Path(i).expanduser()) for i in inputs
    ):
        raise OutputPathError(f"{path}: is an input of this command; write the output elsewhere")
    if path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: cannot write in {path.parent} (permission denied)")
    _writable_ancestor(path)
    return path
