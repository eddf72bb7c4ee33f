"""Field checks for the JSON records: each record declares its fields once (name, kind,
required) and reading one checks every present field, naming the file and the field."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reslab.runs.members import RunFileError

__all__ = ["FieldKind", "KINDS", "check_fields", "expect_object"]


def _number(v: Any) -> bool:
    # NaN and infinity are numbers here: a diverged run records them.
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


FieldKind = tuple[Callable[[Any], bool], str]
KINDS: dict[str, FieldKind] = {
    "number": (_number, "a number"),
    "finite": (lambda v: _number(v) and math.isfinite(v), "a finite number"),
    "int": (_int, "an integer"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "strs": (
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        "a list of strings",
    ),
    "numbers": (lambda v: isinstance(v, list) and all(_number(x) for x in v), "a list of numbers"),
    "numbers_or_null": (
        lambda v: isinstance(v, list) and all(x is None or _number(x) for x in v),
        "a list of numbers",
    ),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


def expect_object(path: Path, value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else a one-line error naming ``path``."""
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: expected a JSON object, got {_json_type(value)}")
    return value


def check_fields(
    path: Path, data: dict[str, Any], fields: dict[str, tuple[str, bool]]
) -> dict[str, Any]:
    """The declared ``fields`` (name → (kind, required)) of ``data``, each checked; absent
    optional fields and JSON nulls are None."""
    out: dict[str, Any] = {}
    for name, (kind, required) in fields.items():
        value = data.get(name)
        if value is None:
            if required:
                raise RunFileError(f"{path}: no {name!r}")
            out[name] = None
            continue
        valid, expected = KINDS[kind]
        if not valid(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise RunFileError(f"{path}: {name!r} must be {expected}, got {shown}")
        out[name] = value
    return out


def _json_type(value: Any) -> str:
    names = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    for cls, name in names.items():
        if isinstance(value, cls):
            return name
    return "a number" if isinstance(value, (int, float)) else type(value).__name__
