"""Options of a recipe, declared once: a dataclass field with its help, kind and flags.

A recipe's config is a dataclass whose fields are made with :func:`option`. The command line
is generated from it (``reslab.cli.options``), the same validation runs for Python callers
(:func:`check_options`), and the whole config is stored in the run folder, so a run is
reproduced or resumed from its files.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GROUPS",
    "KINDS",
    "Kind",
    "OptionSpec",
    "check_options",
    "option",
    "option_specs",
    "parse_option",
]


@dataclass(frozen=True)
class Kind:
    """How an option's text is parsed, which values are valid, and how to say so."""

    parse: Callable[[str], Any]
    valid: Callable[[Any], bool]
    expected: str


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _names(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise ValueError("empty list")
    return names


def _ints(text: str) -> list[int]:
    return [int(part) for part in _names(text)]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


KINDS: dict[str, Kind] = {
    "str": Kind(str, lambda v: isinstance(v, str) and v != "", "a non-empty text"),
    "int": Kind(int, _is_int, "an integer"),
    "positive_int": Kind(int, lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "count": Kind(int, lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "number": Kind(float, _finite, "a finite number"),
    "positive_float": Kind(float, lambda v: _finite(v) and v > 0, "a positive number"),
    "non_negative_float": Kind(float, lambda v: _finite(v) and v >= 0, "a number >= 0"),
    "fraction": Kind(float, lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1)"),
    "multiplier": Kind(float, lambda v: _finite(v) and v >= 1, "a number >= 1"),
    "share": Kind(float, lambda v: _finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "names": Kind(
        _names,
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) for n in v),
        "comma-separated names, e.g. airplane,bird",
    ),
    "epochs": Kind(
        _ints,
        lambda v: isinstance(v, list) and bool(v) and v == sorted(set(v)) and v[0] >= 1,
        "increasing positive epochs like 82,123",
    ),
    "ints": Kind(
        _ints,
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(i) and i >= 1 for i in v),
        "comma-separated positive integers like 20,56",
    ),
    "flag": Kind(bool, lambda v: isinstance(v, bool), "true or false"),
    "device": Kind(
        str,
        lambda v: isinstance(v, str) and re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None,
        "cpu, cuda or cuda:N",
    ),
    "folder": Kind(
        str, lambda v: isinstance(v, str) and Path(v).expanduser().is_dir(), "an existing folder"
    ),
}


# The sections of a recipe's ``--help``, in this order: key -> (title, what the section holds).
GROUPS: dict[str, tuple[str, str]] = {
    "experiment": ("experiment", "which runs the experiment trains"),
    "data": ("data", "what is trained on, and how it is fed"),
    "model": ("model", "the network and where it starts from"),
    "optimisation": ("optimisation", "epochs, batches, optimizer, schedule, loss"),
    "precision": ("precision", "number formats and kernels"),
    "run": ("run folder", "where the run is written, and what is kept in it"),
    "runtime": ("runtime", "speed and display: these may change when a run is resumed"),
}


def parse_option(kind: str, text: str) -> Any:
    """Parse ``text`` as an option of ``kind``; ValueError saying what was expected."""
    spec = KINDS[kind]
    try:
        value = spec.parse(text)
    except ValueError:
        value = None
    if value is None or not spec.valid(value):
        raise ValueError(f"expected {spec.expected}, got {text!r}")
    return value


@dataclass(frozen=True)
class OptionSpec:
    """What :func:`option` records about a field (in ``field.metadata["option"]``).

    Attributes:
        help: one line for ``--help`` (the default is appended there).
        kind: a key of :data:`KINDS`.
        flags: the command-line spellings; for a ``flag`` kind, ``("--x", "--no-x")`` pairs
            (one of them may be missing). Default: ``--field-name``.
        choices: allowed values.
        metavar: the placeholder in ``--help``.
        const: the value of an option given without a value (``nargs="?"``).
        runtime: may change when a run is resumed (speed and display, not results).
        cli: offered on the command line (False: Python only).
        default_text: how ``--help`` describes the default (for a ``None`` that means "auto").
        required: must be given on the command line.
        group: the ``--help`` section, a key of :data:`GROUPS`.
        shared: the name of the shared declaration this is
            (:mod:`reslab.recipes.shared_options`), or None for a recipe's own option.
    """

    help: str
    kind: str = "str"
    flags: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None
    const: Any = None
    runtime: bool = False
    cli: bool = True
    default_text: str | None = None
    required: bool = False
    group: str | None = None
    shared: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown option kind {self.kind!r}")
        if self.group is not None and self.group not in GROUPS:
            raise ValueError(f"unknown option group {self.group!r}; expected one of {list(GROUPS)}")


# What a use of a shared option may set for itself: its default is the command's own.
PER_USE = ("default_text", "required")


def option(default: Any, help: str | OptionSpec, kind: str = "str", **spec: Any) -> Any:
    """A dataclass field with its command-line description (see :class:`OptionSpec`).

    ``help`` is the option's help text, or a shared declaration
    (:mod:`reslab.recipes.shared_options`), of which a field may set only :data:`PER_USE`.
    """
    if isinstance(help, OptionSpec):
        if kind != "str" or set(spec) - set(PER_USE):
            raise TypeError(f"a shared option sets only its default and {', '.join(PER_USE)}")
        described = dataclasses.replace(help, **spec)
    else:
        described = OptionSpec(help=help, kind=kind, **spec)
    meta = {"option": described}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_specs(config_cls: type) -> list[tuple[dataclasses.Field, OptionSpec]]:
    """The fields of a config class that are options, in declaration order."""
    return [
        (f, f.metadata["option"]) for f in dataclasses.fields(config_cls) if "option" in f.metadata
    ]


def check_options(config: Any) -> None:
    """Validate every option of ``config`` against its kind and choices.

    Raises ValueError naming the option as it is spelled on the command line.
    """
    for f, spec in option_specs(type(config)):
        value = getattr(config, f.name)
        if value is None:
            continue
        flag = spec.flags[0] if spec.flags else "--" + f.name.replace("_", "-")
        if spec.choices is not None and value not in spec.choices:
            allowed = ", ".join(map(str, spec.choices))
            raise ValueError(f"{flag}: expected one of {allowed}, got {value!r}")
        if spec.choices is None and not KINDS[spec.kind].valid(value):
            raise ValueError(f"{flag}: expected {KINDS[spec.kind].expected}, got {value!r}")
