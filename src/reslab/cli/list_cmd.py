"""``reslab list [PATTERN]``: registered models with parameters and FLOPs."""

from __future__ import annotations

import argparse

from reslab.cli import CliError
from reslab.models import get_model_spec, list_models
from reslab.models.profile import count_flops, count_params, meta_model

__all__ = ["register"]


def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise CliError(f"no model matches {args.pattern!r}; try `reslab list`")
    print(f"{'model':<20} {'params':>12} {'GFLOPs':>8}  {'input':<10} description")
    for name in names:
        model = meta_model(name)
        size = model.config.data.input_size
        gflops = count_flops(model, size) / 1e9
        res = f"{size[1]}x{size[2]}"
        description = get_model_spec(name).description
        print(f"{name:<20} {count_params(model):>12,} {gflops:>8.3f}  {res:<10} {description}")
    print("GFLOPs: one image at the input size shown, a multiply-add counted as two operations.")
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="registered models with parameters and FLOPs")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*d'")
    p.set_defaults(func=cmd_list)
