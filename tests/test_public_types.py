"""The public API is annotated: every function, and every public method of every class, named in
a package's ``__all__`` has a type for each parameter and for its return value.

The type checker (``mypy``, see pyproject.toml) checks that the annotations agree with the
code; this test checks that they are there, read with :mod:`inspect` from the imported
packages (so ``__all__`` is the one users see).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "reslab"
PACKAGES = sorted(
    ".".join(("reslab", *p.parent.relative_to(PACKAGE).parts)) for p in PACKAGE.rglob("__init__.py")
)
# Dunder methods users call (the rest are Python's protocol, typed by Python itself).
PUBLIC_DUNDERS = {"__init__", "__call__"}


def _unannotated_function(func: Any, skip_first: bool) -> list[str]:
    """Names of ``func``'s parameters without a type, and ``"return"`` if it has none."""
    func = inspect.unwrap(func)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to read
        return []
    params = list(sig.parameters.values())[1 if skip_first else 0 :]
    missing = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if sig.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def _unannotated_class(cls: type) -> list[str]:
    """``"method(param, return)"`` for the public methods ``cls`` itself defines."""
    found = []
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in PUBLIC_DUNDERS:
            continue
        if isinstance(member, property):
            func, skip_first = member.fget, True
        elif isinstance(member, staticmethod):
            func, skip_first = member.__func__, False
        elif isinstance(member, classmethod):
            func, skip_first = member.__func__, True
        elif inspect.isfunction(member):
            func, skip_first = member, True
        else:
            continue
        missing = _unannotated_function(func, skip_first)
        if missing:
            found.append(f"{name}({', '.join(missing)})")
    return found


def unannotated(obj: Any) -> list[str]:
    """What of ``obj`` (a function or a class) has no type annotation; [] for anything else."""
    if inspect.isclass(obj):
        return _unannotated_class(obj)
    if inspect.isfunction(inspect.unwrap(obj)):
        return _unannotated_function(obj, skip_first=False)
    return []


@pytest.mark.parametrize("package", PACKAGES)
def test_the_public_api_is_annotated(package):
    module = importlib.import_module(package)
    problems = []
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if not getattr(obj, "__module__", "").startswith("reslab"):
            continue  # a constant, or a name re-exported from another library
        missing = unannotated(obj)
        if missing:
            problems.append(f"{package}.{name}: {'; '.join(missing)}")
    assert not problems, "public names without type annotations:\n" + "\n".join(problems)


def test_the_check_can_fail():
    def bare(x, y: int = 1, *args, **kwargs):
        return x

    def typed(x: int, *args: str, **kwargs: float) -> int:
        return x

    class Bare:
        def __init__(self, a):
            self.a = a

        def method(self, b: int):
            return b

        @property
        def value(self):
            return self.a

        @staticmethod
        def make(c: int) -> Bare:
            return Bare(c)

        def _private(self, d):
            return d

    assert unannotated(bare) == ["x", "args", "kwargs", "return"]
    assert unannotated(typed) == []
    assert unannotated(Bare) == ["__init__(a, return)", "method(return)", "value(return)"]
    assert unannotated(42) == []
