"""argparse ``type=`` converters for the commands' own flags: each turns bad text into the
one-line ``argparse.ArgumentTypeError`` that argparse prints before exiting with code 2.
The rules are the recipes' option kinds, so a flag means the same everywhere."""

from __future__ import annotations

from reslab.cli.options import arg_type

__all__ = [
    "count",
    "device",
    "finite_float",
    "folder",
    "fraction",
    "ints",
    "names",
    "positive_float",
    "positive_int",
]

positive_int = arg_type("positive_int")
count = arg_type("count")
positive_float = arg_type("positive_float")
finite_float = arg_type("number")
fraction = arg_type("fraction")
names = arg_type("names")
ints = arg_type("ints")
folder = arg_type("folder")
device = arg_type("device")
