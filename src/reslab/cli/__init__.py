"""The ``reslab`` command line: thin sub-commands that parse, call the library and print.

Each sub-command lives in its own module with a ``register(subparsers, plots)`` function:
``subparsers`` takes new commands, ``plots`` takes new ``reslab plot KIND`` parsers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "CliError"]

# Modules that add sub-commands; a missing optional one is skipped.
COMMAND_MODULES = (
    "reslab.cli.models_cmd",
    "reslab.cli.train_cmd",
    "reslab.cli.weights_cmd",
    "reslab.cli.analysis_cmd",
    "reslab.cli.export_cmd",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (bad input) unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reslab", description="Residual networks: build, verify, train, inspect, ship."
    )
    from reslab import __version__

    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plot = sub.add_parser("plot", help="draw a figure from a run or a model")
    plots = plot.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(sub, plots)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from reslab.models import UnknownModelError
    from reslab.weights import WeightsError

    return (CliError, UnknownModelError, WeightsError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as err:
        code = getattr(err, "code", 2)
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"reslab {args.command}: error: {message}", file=sys.stderr)
        return code if isinstance(code, int) else 2
    return int(result or 0)
