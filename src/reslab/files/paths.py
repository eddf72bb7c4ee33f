"""Checking where output goes before any work is done, so a bad ``--out`` costs one line and
no minutes of loading data or models first."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from reslab.files.atomic import file_kind

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


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are, or resolve to, the same file."""
    try:
        return os.path.realpath(a) == os.path.realpath(b) or a.samefile(b)
    except OSError:
        return False


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = ()) -> Path:
    """``path`` if a file can be written there; :class:`OutputPathError` if not.

    Refused: a folder; a target that exists and is not a regular file (a device, a FIFO, a
    socket), whether named directly or through a link; a target that is, or resolves to, one
    of the command's ``inputs`` (every file it reads; a run folder's files are listed by
    ``reslab.runs.run_inputs``).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path}: is a folder; give a file name")
    if os.path.lexists(path):
        for given in inputs:
            if _same_file(path, Path(given).expanduser()):
                raise OutputPathError(
                    f"{path}: is an input of this command; write the output elsewhere"
                )
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None  # a dangling link: it is replaced, its missing target is not created
        if mode is not None and not stat.S_ISREG(mode):
            raise OutputPathError(
                f"{path}: exists and is {file_kind(mode)}, not a regular file; not replaced"
            )
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise OutputPathError(f"{path}: cannot write in {path.parent} (permission denied)")
    _writable_ancestor(path)
    return path
