"""One writer per folder: an exclusive, advisory lock held while a process writes into it.

The lock is ``fcntl.flock`` on ``FOLDER/.lock``: the kernel releases it when the process ends,
however it ends (a SIGKILL included), so a stale lock never blocks the next run. The file
records the holder's pid for the message a second writer gets. It is opened without following
links and must be a regular file: a ``.lock`` that links elsewhere is refused, never truncated.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

__all__ = ["FolderBusy", "FolderLock", "FolderLockError"]

LOCK_NAME = ".lock"


class FolderBusy(OSError):
    """Another process is writing into the folder."""


class FolderLockError(OSError):
    """The folder's lock file is not one reslab can use (a link, a FIFO, a folder)."""


class FolderLock:
    """Hold the single-writer lock of ``folder`` (created if needed) until :meth:`release`.

    Raises :class:`FolderBusy` at once (never waits) when another process holds it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = _open_lock_file(self.folder / LOCK_NAME)
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

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """Open (create) the lock file without following a link or blocking on a FIFO; refuse
    anything but a regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FolderLockError(
                f"{path}: is a link; remove it (the lock is not followed)"
            ) from None
        if err.errno in (errno.ENXIO, errno.EISDIR):
            raise FolderLockError(f"{path}: not a regular file; remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FolderLockError(f"{path}: not a regular file; remove it")
    return fd
