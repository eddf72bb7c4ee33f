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
