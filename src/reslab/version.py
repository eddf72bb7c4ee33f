"""The package version (a module of its own, so any room can read it without import cycles)
and, for a source checkout, the git commit it runs from."""

from __future__ import annotations

import subprocess
from pathlib import Path

__version__ = "0.1.0"


def _git(*args: str) -> str:
    here = Path(__file__).resolve().parent
    done = subprocess.run(
        ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def git_commit() -> str | None:
    """The git commit of the source tree reslab runs from (``+dirty`` when the package's
    tracked files have changes), or None when reslab is not a tracked file of a git checkout
    (an installed wheel, or a virtual environment inside someone's repository) or git is
    missing."""
    try:
        _git("ls-files", "--error-unmatch", "version.py")  # fails unless tracked here
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit or None
