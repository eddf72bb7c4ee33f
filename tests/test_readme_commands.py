"""CI runs the README's test command, character for character, so what a newcomer types is
what is tested."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    block = re.search(r"## Two commands on a fresh machine\s+```bash\n(.*?)```", text, re.S)
    assert block, "README has no 'Two commands on a fresh machine' bash block"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.startswith("#")]


def test_ci_runs_the_readme_test_command():
    train, tests = _commands((REPO / "README.md").read_text())
    assert "reslab train --data fashion-mnist" in train and "pytest" in tests
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in ci, "the README's test command is not a line of .ci/run"
    # Both install into a virtual environment (PEP 668 Pythons refuse anything else).
    assert train.startswith("python3 -m venv .venv && ") and tests.startswith("python3 -m venv")


def test_ci_runs_the_readme_static_checks():
    text = (REPO / "README.md").read_text()
    block = re.search(r"Lint and type\s+checks.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no block with the lint and type check commands"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert any("mypy" in ln for ln in lines) and any("ruff check src" in ln for ln in lines)
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    missing = [ln for ln in lines if ln not in ci]
    assert not missing, f"README commands that .ci/run does not run: {missing}"
    # They come before the tests, so a type error fails CI early.
    assert ci.index(lines[-1]) < next(i for i, ln in enumerate(ci) if "pytest" in ln)
