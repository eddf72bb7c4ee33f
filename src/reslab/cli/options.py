"""Command-line flags from option declarations: a recipe's config dataclass
(:func:`add_config_options`, one flag per field, in ``--help`` sections) or a shared option
that a command without a config takes (:func:`add_shared`). Both go through
:func:`add_option`, so a flag has the same type, help and error in every command.

A config's flags default to ``None`` on the parsed namespace, so a command can tell what the
user typed (a resumed run refuses changes) from what the config's own defaults provide.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reslab.analysis import CAM_METHODS
from reslab.recipes.options import GROUPS, OptionSpec, option_specs, parse_option
from reslab.recipes.shared_options import shared_option

__all__ = [
    "LAYER",
    "METHOD",
    "RESTRICT_CLASSES",
    "SPLIT",
    "TOPK",
    "add_config_options",
    "add_option",
    "add_shared",
    "add_valued",
    "arg_type",
    "config_fields_from_args",
    "help_text",
]

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
OTHER_OPTIONS = "other options"  # the section of an option without a group

# Shared options that only commands take (no recipe config), next to reslab.recipes.shared_options.
SPLIT = shared_option(
    "split", ("--split",), "which split of the data set", choices=("test", "valid", "train")
)
RESTRICT_CLASSES = shared_option(
    "restrict_classes",
    ("--restrict-classes",),
    "score only the data's classes among the model's (ImageNet wnids/names matched "
    "automatically, or one model class index/name per data class, comma-separated)",
    metavar="LIST",
    const="auto",
)
METHOD = shared_option(
    "method", ("--method",), "how the class activation maps are made", choices=CAM_METHODS
)
LAYER = shared_option(
    "layer",
    ("--layer",),
    "module whose activations make the class maps",
    metavar="NAME",
    default_text="the last stage, layer4/layer3",
)
TOPK = shared_option("topk", ("--topk",), "classes per image", "positive_int")


@functools.cache
def arg_type(kind: str) -> Callable[[str], Any]:
    """The argparse ``type=`` converter of an option kind (one-line error, exit code 2); one
    object per kind, so two flags of one kind have the very same converter."""

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


def help_text(spec: OptionSpec, default: Any) -> str:
    """The option's help with its default, as ``--help`` shows it."""
    if spec.default_text is not None:
        shown = spec.default_text
    elif spec.kind == "flag" or default is None:
        shown = None
    else:
        shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
    text = f"{spec.help} (default: {shown})" if shown else spec.help
    return text.replace("%", "%%")  # argparse formats help with %: "93 %" is text


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _dest(spec: OptionSpec) -> str:
    on = [x for x in spec.flags if not x.startswith("--no-")] or spec.flags
    return on[0].removeprefix("--").removeprefix("no-").replace("-", "_")


Container = argparse._ActionsContainer  # a parser or an argument group


def _mark(action: argparse.Action, spec: OptionSpec) -> argparse.Action:
    # Which shared declaration made it (the tests walk the parsers for it).
    action.shared_option = spec.shared  # type: ignore[attr-defined]
    return action


def _add_flag(container: Container, spec: OptionSpec, dest: str, default: Any, value: Any) -> None:
    on = [x for x in spec.flags if not x.startswith("--no-")]
    off = [x for x in spec.flags if x.startswith("--no-")]
    on_help = help_text(spec, default) if default is not True or not off else argparse.SUPPRESS
    for flag in on:
        _mark(container.add_argument(
            flag, dest=dest, action="store_const", const=True, default=value, help=on_help
        ), spec)  # fmt: skip
    for flag in off:
        text = f"turn off {spec.help if spec.help[:2].isupper() else _lower_first(spec.help)}"
        text = text.replace("%", "%%")
        if default is False:
            text = argparse.SUPPRESS
        _mark(container.add_argument(
            flag, dest=dest, action="store_const", const=False, default=value, help=text
        ), spec)  # fmt: skip


def add_valued(
    parser: Container, flag: str, kind: Callable[[str], Any], metavar: str, default: Any, text: str
) -> None:
    """A command's own option that takes a value (``kind`` converts it), with its help text."""
    parser.add_argument(flag, type=kind, metavar=metavar, default=default, help=text)


def add_option(
    container: Container,
    spec: OptionSpec,
    dest: str | None = None,
    default: Any = None,
    value: Any = None,
) -> None:
    """Add ``spec``'s flags to a parser or argument group.

    Args:
        dest: the attribute on the parsed namespace (default: from the first flag).
        default: the default ``--help`` shows (unless ``spec.default_text``).
        value: the namespace's value when the flag is not given.
    """
    dest = dest or _dest(spec)
    if spec.kind == "flag":
        _add_flag(container, spec, dest, default, value)
        return
    flags = spec.flags or (f"--{dest.replace('_', '-')}",)
    kwargs: dict[str, Any] = {"dest": dest, "default": value, "help": help_text(spec, default)}
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
    _mark(container.add_argument(*flags, **kwargs), spec)


def add_shared(
    container: Container,
    spec: OptionSpec,
    default: Any = None,
    *,
    default_text: str | None = None,
    required: bool = False,
) -> None:
    """Add a shared option (:mod:`reslab.recipes.shared_options`) to a command's parser, with
    the command's own default (on the namespace and in ``--help``)."""
    if spec.shared is None:
        raise TypeError("add_shared takes a declaration of reslab.recipes.shared_options")
    text = default_text if default_text is not None else spec.default_text
    use = dataclasses.replace(spec, default_text=text, required=required)
    add_option(container, use, default=default, value=default)


def add_config_options(
    parser: argparse.ArgumentParser,
    config_cls: type,
    exclude: Iterable[str] = (),
    extra: Iterable[OptionSpec] = (),
    titles: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """One flag per command-line option of ``config_cls`` (its help, type and choices), plus
    the shared options ``extra`` that the command takes besides, in ``--help`` sections by
    group (:data:`reslab.recipes.options.GROUPS`; ``titles`` gives some another title and
    description)."""
    entries = [(spec, _dest(spec), None) for spec in extra]
    for f, spec in option_specs(config_cls):
        if not spec.cli or f.name in exclude:
            continue
        if spec.shared is not None and _dest(spec) != f.name:
            raise TypeError(f"{config_cls.__name__}.{f.name}: the shared {spec.flags[0]} "
                            f"is the field {_dest(spec)!r}")  # fmt: skip
        entries.append((spec, f.name, _default(f)))
    sections: list[tuple[str | None, str, str | None]] = [(k, *GROUPS[k]) for k in GROUPS]
    for key, title, description in [*sections, (None, OTHER_OPTIONS, None)]:
        members = [e for e in entries if e[0].group == key]
        if not members:
            continue
        if key is not None and titles and key in titles:
            title, description = titles[key]
        group = parser.add_argument_group(title, description)
        for spec, dest, default in members:
            add_option(group, spec, dest, default)


def config_fields_from_args(config_cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options the user gave (not ``None``), by field name."""
    names = {f.name for f, spec in option_specs(config_cls) if spec.cli}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
