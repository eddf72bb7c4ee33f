"""One writer per folder: an exclusive, advisory lock held while a process writes into it.

The lock is ``fcntl.flock`` on ``FOLDER/.lock``: the kernel releases it when the process ends,
however it ends (a SIGKILL included), so a stale lock never blocks the next run. The file
records the holder's pid for the message a second writer gets.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["FolderBusy", "FolderLock"]

LOCK_NAME = ".lock"


class FolderBusy(OSError):
    """Another process is writing into the folder."""


class FolderLock:
    """Hold the single-writer lock of ``folder`` (created if needed) until :meth:`release`.

    Raises :class:`FolderBusy` at once (never waits) when another process holds it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise FolderBusy(
                f"{self.folder}: another reslab process (pid {holder}) is writing here; "
                "wait for it, or choose another folder"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
