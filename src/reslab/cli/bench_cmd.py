"""``reslab bench MODEL``: time a model, compared with another layer set or torchvision."""

from __future__ import annotations

import argparse

import torch

from reslab.cli.argtypes import count, positive_int
from reslab.models import get_model_spec
from reslab.models.peak_memory import measure_peak_memory
from reslab.models.profile import bench_models, cpu_name

__all__ = ["register"]


def cmd_bench(args: argparse.Namespace) -> int:
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


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time a model (and compare layer sets or torchvision)",
        description="Time forward (and forward+backward) passes on random images; compared "
        "variants share their weights and run interleaved, so machine drift hits them alike.",
    )
    p.add_argument("model", help="registered model name")
    p.add_argument("--batch", type=positive_int, default=8, help="images per step (default 8)")
    p.add_argument("--size", type=positive_int, default=224, help="image side (default 224)")
    p.add_argument("--runs", type=positive_int, default=5, help="timed runs; the median is shown")
    p.add_argument("--threads", type=count, default=0, help="torch threads (default: torch's)")
    p.add_argument("--layers", default="torch", choices=["torch", "scratch"], help="layer set")
    p.add_argument(
        "--compare",
        choices=["torch", "scratch", "torchvision"],
        help="also time this layer set, or torchvision's model, and print the ratios",
    )
    p.add_argument("--forward-only", action="store_true", help="skip forward+backward")
    p.add_argument("--memory", action="store_true", help="also measure peak memory per variant")
    p.set_defaults(func=cmd_bench)
