"""The ``reslab`` command line: thin sub-commands that parse, call the library and print.

Each verb lives in its own module with a ``register(subparsers, plots)`` function:
``subparsers`` takes new commands, ``plots`` takes new ``reslab plot KIND`` parsers. A module
parses, calls the library and prints; the work is done in the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from reslab.version import __version__

__all__ = ["main", "build_parser", "CliError", "Parser"]

# Modules that add sub-commands; a missing optional one is skipped.
COMMAND_MODULES = (
    "reslab.cli.list_cmd",
    "reslab.cli.info_cmd",
    "reslab.cli.bench_cmd",
    "reslab.cli.train_cmd",
    "reslab.cli.eval_cmd",
    "reslab.cli.finetune_cmd",
    "reslab.cli.predict_cmd",
    "reslab.cli.weights_cmd",
    "reslab.cli.export_cmd",
    "reslab.cli.plot_cmd",
    "reslab.cli.embedding_cmd",
    "reslab.cli.experiment_cmd",
    "reslab.cli.analyze_cmd",
    "reslab.cli.explain_cmd",
    "reslab.cli.report_cmd",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit code 2 (bad input) unless given."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with a usage error in one line, exit code 2 (``reslab train: error: argument
    --threads: expected a positive integer, got '0' (see --help)``); ``--help`` shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class PlotKinds:
    """The ``reslab plot KIND`` sub-parsers, made when the first kind is added (so ``plot``
    is listed where its module registers it)."""

    def __init__(self, sub: argparse._SubParsersAction) -> None:
        self._sub = sub
        self._kinds: argparse._SubParsersAction | None = None

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if self._kinds is None:
            plot = self._sub.add_parser("plot", help="draw a figure from a run or a model")
            self._kinds = plot.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
        return self._kinds.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="reslab", description="Residual networks: build, verify, train, inspect, ship."
    )
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    plots = PlotKinds(sub)
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
    # ValueError covers UnknownModelError, WeightsError, ConfigError and CalibrationError;
    # OSError covers missing files, unwritable folders, failed downloads and busy run folders;
    # EngineUnavailable: an inference engine this machine cannot run.
    from reslab.inference import EngineUnavailable

    return (CliError, ValueError, OSError, EngineUnavailable)


def _user_error(err: BaseException) -> BaseException | None:
    """The error to show in one line, or None for a bug (which keeps its traceback)."""
    return err if isinstance(err, _user_errors()) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from reslab.training import host_memory_policy  # (torch: after the arguments)

        host_memory_policy()  # a bad $RESLAB_HOST_MEMORY is refused before anything is written
        result = args.func(args)
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        shown = _user_error(err)
        if shown is None:
            raise
        code = getattr(shown, "code", 2)
        message = str(shown).strip().splitlines()[0] if str(shown).strip() else type(shown).__name__
        print(f"reslab {args.command}: error: {message}", file=sys.stderr)
        return code if isinstance(code, int) else 2
    return int(result or 0)
