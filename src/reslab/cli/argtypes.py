"""argparse ``type=`` converters shared by the subcommands: each turns bad text into the
one-line ``argparse.ArgumentTypeError`` that argparse prints before exiting with code 2."""

from __future__ import annotations

import argparse

__all__ = ["comma_list", "epoch_list", "fraction", "positive_float", "positive_int"]


def _checked(text: str, cast, ok, expected: str):
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "a positive integer")


def positive_float(text: str) -> float:
    return _checked(text, float, lambda v: v > 0, "a positive number")  # NaN fails too


def fraction(text: str) -> float:
    return _checked(text, float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def comma_list(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. airplane,bird")
    return names


def epoch_list(text: str) -> list[int]:
    """``"82,123"`` → ``[82, 123]``: increasing positive epoch numbers."""
    try:
        values = [positive_int(part) for part in comma_list(text)]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected increasing positive epochs like 82,123, got {text!r}"
        ) from None
    if values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"expected increasing epochs, got {text!r}")
    return values
