"""``reslab list`` and ``reslab info``: what models exist and what they look like."""

from __future__ import annotations

import argparse

import torch

from reslab.cli import CliError
from reslab.models import ResNet, build_model, get_model_spec, list_models

__all__ = ["count_flops", "register"]


def count_flops(model: ResNet, input_size: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass (a multiply-add counts as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *input_size), device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops()


def _meta_model(name: str, **kwargs) -> ResNet:
    # Built on the meta device: shapes and counts without allocating any weights.
    with torch.device("meta"):
        return build_model(name, **kwargs)


def cmd_list(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise CliError(f"no model matches {args.pattern!r}; try `reslab list`")
    print(f"{'model':<20} {'params':>12} {'GFLOPs':>8}  {'input':<10} description")
    for name in names:
        model = _meta_model(name)
        params = sum(p.numel() for p in model.parameters())
        size = model.default_cfg["input_size"]
        gflops = count_flops(model, size) / 1e9
        res = f"{size[1]}x{size[2]}"
        print(
            f"{name:<20} {params:>12,} {gflops:>8.3f}  {res:<10} {get_model_spec(name).description}"
        )
    print("GFLOPs: one image at the input size shown, a multiply-add counted as two operations.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    model = _meta_model(args.model, in_chans=args.in_chans)
    cfg = model.default_cfg
    size = (args.in_chans, args.size, args.size) if args.size else cfg["input_size"]
    x = torch.zeros((1, *size), device="meta")
    print(f"{args.model}: {get_model_spec(args.model).description}")
    print(
        f"input: (N, {size[0]}, H, W) images scaled to 0-1, default {size[1]}x{size[2]}; "
        f"normalised inside the model with mean={_fmt(cfg['mean'])} std={_fmt(cfg['std'])}"
    )
    print(f"\n{'stage':<10} {'output shape':<22} {'params':>12}")
    with torch.no_grad():
        h = model.eval()._stem(x)
        stem_params = sum(
            p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("conv1", "bn1")
        )
        print(f"{'stem':<10} {str(tuple(h.shape)):<22} {stem_params:>12,}")
        for name, stage in zip(model.stage_names, model.stages):
            h = stage(h)
            params = sum(p.numel() for p in stage.parameters())
            print(f"{name:<10} {str(tuple(h.shape)):<22} {params:>12,}")
        logits = model.forward_head(h)
    print(
        f"{'head':<10} {str(tuple(logits.shape)):<22} "
        f"{sum(p.numel() for p in model.fc.parameters()):>12,}"
    )
    total = sum(p.numel() for p in model.parameters())
    print(
        f"\ntotal parameters: {total:,}   GFLOPs at {size[1]}x{size[2]}: "
        f"{count_flops(model, size) / 1e9:.3f}"
    )
    return 0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="registered models with parameters and FLOPs")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'resnet*d'")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="stage table of one model")
    p.add_argument("model")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--size", type=int, default=None, help="input resolution (default: model's)")
    p.set_defaults(func=cmd_info)
