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
    register_bench(sub)


def cmd_bench(args: argparse.Namespace) -> int:
    from reslab.bench import bench_models, cpu_name, measure_peak_memory

    if args.threads:
        torch.set_num_threads(args.threads)
    get_model_spec(args.model)  # fail early, with close matches, on a typo
    variants = {args.layers: (args.layers, None)}
    if args.compare:
        ref = "torchvision" if args.compare == "torchvision" else None
        variants[args.compare] = ("torch" if ref else args.compare, ref)
    modes = ("forward",) if args.forward_only else ("forward", "forward+backward")
    results = bench_models(
        args.model, variants, batch=args.batch, size=args.size, runs=args.runs, modes=modes
    )
    threads = torch.get_num_threads()
    print(
        f"# reslab bench {args.model}: batch {args.batch}, {args.size}px, {args.runs} runs "
        f"(median), {threads} threads, torch {torch.__version__}, {cpu_name()}"
    )
    print(f"{'variant':<14} {'mode':<18} {'median s':>9} {'peak MB':>9}")
    for r in results:
        if args.memory:
            r.peak_mb = measure_peak_memory(
                args.model, *variants[r.label], r.mode, args.batch, args.size, threads
            )
        peak = f"{r.peak_mb:9.0f}" if r.peak_mb is not None else f"{'-':>9}"
        print(f"{r.label:<14} {r.mode:<18} {r.median:9.4f} {peak}")
    if args.compare:
        for mode in modes:
            a, b = (r for r in results if r.mode == mode)
            line = f"ratio {a.label}/{b.label} {mode}: time {a.median / b.median:.2f}x"
            if a.peak_mb and b.peak_mb:
                line += f", peak memory {a.peak_mb / b.peak_mb:.2f}x"
            print(line)
    return 0


def register_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time a model (and compare layer sets or torchvision)")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--layers", default="torch", choices=["torch", "scratch"])
    p.add_argument("--compare", choices=["torch", "scratch", "torchvision"], default=None)
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--memory", action="store_true", help="also measure peak memory per variant")
    p.set_defaults(func=cmd_bench)
