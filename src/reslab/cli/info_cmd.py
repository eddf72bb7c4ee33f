"""``reslab info MODEL``: the stage table of one model (output shape and parameters)."""

from __future__ import annotations

import argparse

import torch

from reslab.cli.argtypes import positive_int
from reslab.models import get_model_spec
from reslab.models.profile import count_flops, count_params, meta_model

__all__ = ["register"]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def cmd_info(args: argparse.Namespace) -> int:
    model = meta_model(args.model, in_chans=args.in_chans).eval()
    data = model.config.data
    size = (args.in_chans, args.size, args.size) if args.size else data.input_size
    print(f"{args.model}: {get_model_spec(args.model).description}")
    print(
        f"input: (N, {size[0]}, H, W) images scaled to 0-1, default {size[1]}x{size[2]}; "
        f"normalised inside the model with mean={_fmt(data.mean)} std={_fmt(data.std)}"
    )
    print(f"\n{'stage':<10} {'output shape':<22} {'params':>12}")
    stem = ("normalize", "conv1", "bn1")
    stem_params = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in stem)
    with torch.no_grad():
        h = model.forward_stem(torch.zeros((1, *size), device="meta"))
        print(f"{'stem':<10} {str(tuple(h.shape)):<22} {stem_params:>12,}")
        for name, stage in zip(model.stage_names, model.stages):
            h = stage(h)
            print(f"{name:<10} {str(tuple(h.shape)):<22} {count_params(stage):>12,}")
        logits = model.forward_head(h)
    print(f"{'head':<10} {str(tuple(logits.shape)):<22} {count_params(model.fc):>12,}")
    gflops = count_flops(model, size) / 1e9
    print(
        f"\ntotal parameters: {count_params(model):,}   GFLOPs at {size[1]}x{size[2]}: {gflops:.3f}"
    )
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="stage table of one model")
    p.add_argument("model")
    p.add_argument("--in-chans", type=positive_int, default=3, help="input channels (default 3)")
    p.add_argument("--size", type=positive_int, help="input resolution (default: the model's)")
    p.set_defaults(func=cmd_info)
