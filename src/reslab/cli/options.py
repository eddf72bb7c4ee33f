"""Command-line flags generated from a recipe's config dataclass (one definition per option).

Every flag defaults to ``None`` on the parsed namespace, so a command can tell what the user
typed (a resumed run refuses changes) from what the config's own defaults provide.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from reslab.recipes.options import OptionSpec, option_specs, parse_option

__all__ = ["add_config_options", "arg_type", "config_fields_from_args"]

METAVARS = {
    "int": "N",
    "positive_int": "N",
    "count": "N",
    "number": "X",
    "positive_float": "X",
    "non_negative_float": "X",
    "fraction": "F",
    "multiplier": "X",
    "share": "F",
    "names": "LIST",
    "epochs": "EPOCHS",
    "ints": "LIST",
    "folder": "DIR",
}


def arg_type(kind: str):
    """An argparse ``type=`` converter for an option kind (one-line error, exit code 2)."""

    def convert(text: str) -> Any:
        try:
            return parse_option(kind, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = kind  # argparse names the type in its messages
    return convert


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _help(f: dataclasses.Field, spec: OptionSpec) -> str:
    default = _default(f)
    if spec.default_text is not None:
        shown = spec.default_text
    elif spec.kind == "flag" or default is None:
        shown = None
    else:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
    return f"{spec.help} (default: {shown})" if shown else spec.help


def _add_flag(group, f: dataclasses.Field, spec: OptionSpec) -> None:
    flags = spec.flags or (f"--{f.name.replace('_', '-')}",)
    on = [x for x in flags if not x.startswith("--no-")]
    off = [x for x in flags if x.startswith("--no-")]
    default = _default(f)
    on_help = _help(f, spec) if default is not True or not off else argparse.SUPPRESS
    for flag in on:
        group.add_argument(flag, dest=f.name, action="store_const", const=True, help=on_help)
    for flag in off:
        text = f"turn off {spec.help[0].lower()}{spec.help[1:]}"
        if default is False:
            text = argparse.SUPPRESS
        group.add_argument(flag, dest=f.name, action="store_const", const=False, help=text)


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, exclude=()) -> None:
    """Add one flag per command-line option of ``config_cls`` (its help, type and choices)."""
    for f, spec in option_specs(config_cls):
        if not spec.cli or f.name in exclude:
            continue
        if spec.kind == "flag":
            _add_flag(parser, f, spec)
            continue
        flags = spec.flags or (f"--{f.name.replace('_', '-')}",)
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": _help(f, spec)}
        if spec.choices is not None:
            kwargs["choices"] = spec.choices
        else:
            kwargs["type"] = arg_type(spec.kind)
        metavar = spec.metavar or METAVARS.get(spec.kind)
        if metavar and spec.choices is None:
            kwargs["metavar"] = metavar
        if spec.const is not None:
            kwargs.update(nargs="?", const=spec.const)
        if spec.required:
            kwargs["required"] = True
        parser.add_argument(*flags, **kwargs)


def config_fields_from_args(config_cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options the user gave (not ``None``), by field name."""
    names = {f.name for f, spec in option_specs(config_cls) if spec.cli}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
