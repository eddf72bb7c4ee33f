"""The repository holds the whole package: no source file is hidden from git by ``.gitignore``
(a pattern such as ``runs/`` once matched ``src/reslab/runs/``, so the working tree imported a
package that a fresh clone lacks)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ignored_sources(repo: Path) -> list[str]:
    """Python files under ``src/`` and ``tests/`` that git ignores (untracked for that reason)."""
    out = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", "src", "tests"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [p for p in out.splitlines() if p.endswith(".py")]


def _git_checkout(path: Path) -> bool:
    return shutil.which("git") is not None and (path / ".git").exists()


@pytest.mark.skipif(not _git_checkout(REPO), reason="not a git checkout")
def test_no_source_file_is_ignored_by_git():
    assert ignored_sources(REPO) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_check_finds_an_ignored_module(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("runs/\n")
    room = tmp_path / "src" / "pkg" / "runs"
    room.mkdir(parents=True)
    (room / "__init__.py").write_text("")
    (tmp_path / "src" / "pkg" / "__init__.py").write_text("")
    assert ignored_sources(tmp_path) == ["src/pkg/runs/__init__.py"]
    (tmp_path / ".gitignore").write_text("/runs/\n")  # anchored at the root: the fix
    assert ignored_sources(tmp_path) == []
