"""``reslab bench``: time a model against another layer set or torchvision, or time it on
inference engines (``--engine NAME``; ``--ladder``: every engine, speed and accuracy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from reslab.cli import CliError
from reslab.cli.argtypes import positive_int
from reslab.cli.bench_train import add_train_bench_options, check_not_train, cmd_bench_train
from reslab.cli.engine_args import (
    add_calibration_options,
    add_engine_option,
    calibration_tensor,
    ensure_available,
    require_calibration,
)
from reslab.cli.options import add_shared
from reslab.data import load_dataset
from reslab.inference import (
    ENGINE_NAMES,
    environment,
    format_ladder,
    get_engine,
    ladder_eval_data,
    run_ladder,
    torchvision_twin,
)
from reslab.models import get_model_spec
from reslab.models.peak_memory import measure_peak_memory
from reslab.models.profile import bench_models, cpu_name
from reslab.recipes.shared_options import DATA, THREADS
from reslab.weights import resolve_model

__all__ = ["register"]


def _bench_layer_sets(args: argparse.Namespace) -> int:
    if "@" in args.spec or Path(args.spec).exists():
        raise CliError(
            "timing layer sets takes a registered model name; MODEL@TAG, checkpoints and run "
            "folders are timed with --engine NAME or --ladder"
        )
    get_model_spec(args.spec)  # fail early, with close matches, on a typo
    batch, size = args.batch or 8, args.size or 224
    variants: dict[str, tuple[str, str | None]] = {args.layers: (args.layers, None)}
    if args.compare:
        ref = "torchvision" if args.compare == "torchvision" else None
        variants[args.compare] = ("torch" if ref else args.compare, ref)
    modes = ("forward",) if args.forward_only else ("forward", "forward+backward")
    results = bench_models(args.spec, variants, batch=batch, size=size, runs=args.runs, modes=modes)
    threads = torch.get_num_threads()
    print(
        f"# reslab bench {args.spec}: batch {batch}, {size}px, {args.runs} runs "
        f"(median), {threads} threads, torch {torch.__version__}, {cpu_name()}"
    )
    print(f"{'variant':<14} {'mode':<18} {'median s':>9} {'peak MB':>9}")
    for r in results:
        if args.memory:
            r.peak_mb = measure_peak_memory(
                args.spec, *variants[r.label], r.mode, batch, size, threads
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


def _inputs(args: argparse.Namespace, model, batch: int):
    """(timed batch, evaluation data or None): real images with --data, else seeded noise."""
    shape = tuple(model.default_cfg["input_size"])
    if args.data:
        if args.size and args.size != shape[-1]:
            raise CliError(f"with --data the images are the model's input size ({shape[-1]} px)")
        data = load_dataset(args.data, "test", data_dir=args.data_dir)
        eval_data = ladder_eval_data(data, model, batch, limit=args.limit)
        return next(iter(eval_data()))[0], eval_data
    if args.limit:
        raise CliError("--limit counts evaluation images: it needs --data")
    if args.size:
        shape = (*shape[:-2], args.size, args.size)
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0)), None


def _ladder_engines(args: argparse.Namespace) -> tuple[str, ...]:
    if not args.ladder:
        if args.engines:
            raise CliError("--engines picks the rungs of --ladder; for one engine use --engine")
        return (args.engine,)
    if args.engine:
        raise CliError("--ladder runs every engine; pick some with --engines A,B,C")
    if not args.engines:
        return ENGINE_NAMES
    names = tuple(n.strip() for n in args.engines.split(",") if n.strip())
    unknown = [n for n in names if n not in ENGINE_NAMES]
    if unknown or not names:
        raise CliError(f"--engines: unknown {unknown or args.engines!r}; expected {ENGINE_NAMES}")
    return names


def _bench_engines(args: argparse.Namespace) -> int:
    engines = _ladder_engines(args)
    needs = any(get_engine(name).needs_calibration for name in engines)
    if not args.ladder:
        require_calibration(args, needs, f"engine {args.engine!r}")
        ensure_available(args.engine)
    elif args.calib is None and needs:
        print("int8 rungs skipped: they need --calib DATA (real images)", file=sys.stderr)
    model = resolve_model(args.spec).eval()
    batch = args.batch or 16
    images, eval_data = _inputs(args, model, batch)
    calib = calibration_tensor(args, model) if args.calib else None
    twin = torchvision_twin(model)
    before = environment()
    ladder = run_ladder(
        model,
        images,
        engines=engines,
        reference=twin[1] if twin else None,
        reference_name=twin[0] if twin else "eager",
        calib=calib,
        eval_data=eval_data,
        runs=args.runs,
        latency_runs=args.latency_runs,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    load = [before["load_average"], environment()["load_average"]]
    if not args.ladder and ladder.rungs[-1].skipped:
        raise CliError(f"engine {args.engine!r}: {ladder.rungs[-1].skipped}")
    size = tuple(images.shape[1:])
    if args.json:
        facts = {"spec": args.spec, "size": list(size), "data": args.data, "limit": args.limit}
        facts |= {"calib": args.calib, "calib_images": args.calib_images if args.calib else None}
        facts |= {"environment": before, "load_average_before_after": load}
        print(json.dumps(facts | ladder.to_dict(), indent=2))
        return 0
    print(
        f"# reslab bench {args.spec}: batch {batch}, {'x'.join(map(str, size))}, "
        f"{args.runs} runs (median), batch-1 latency over {args.latency_runs} runs, "
        f"{before['threads']} threads, torch {before['torch']}, {before['cpu']}, "
        f"load {load[0][0]:.2f} -> {load[1][0]:.2f}"
    )
    print(format_ladder(ladder))
    if any(r.precision == "int8" and not r.skipped for r in ladder.rungs):
        int8 = before["int8"]
        print(
            f"int8 on this CPU ({int8['cpu']['class']}): onnx-int8 {int8['onnx-int8']}; "
            f"int8 (PT2E) {int8['int8']}"
        )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.spec == "train":
        return cmd_bench_train(args)
    check_not_train(args)
    if args.ladder or args.engine or args.engines:
        if args.compare or args.layers != "torch" or args.memory or args.forward_only:
            raise CliError(
                "--compare/--layers/--memory/--forward-only time layer sets; "
                "they do not combine with --engine or --ladder"
            )
        return _bench_engines(args)
    if args.calib or args.data or args.limit:
        raise CliError("--data, --limit and --calib go with --engine NAME or --ladder")
    return _bench_layer_sets(args)


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time a model: layer sets, torchvision, inference engines (--ladder)",
        description="Time forward (and forward+backward) passes on random images; compared "
        "variants share their weights and run interleaved, so machine drift hits them alike. "
        "With --engine NAME or --ladder: time inference engines (every one this machine has, "
        "for --ladder) on the same batch, interleaved, against torchvision's eager fp32 twin "
        "(or reslab eager): img/s, batch-1 latency, logit gap and, with --data, top-1 on real "
        "images; int8 rungs need --calib DATA. `reslab bench train MODEL --data D` times "
        "training instead: the Learner against a bare PyTorch loop (see its options below).",
    )
    p.add_argument("spec", metavar="MODEL|MODEL@TAG|CKPT|RUN_DIR|train")
    p.add_argument(
        "--batch",
        type=positive_int,
        help="images per step (default 8; 16 for engines; 256 for bench train)",
    )
    p.add_argument(
        "--size", type=positive_int, help="image side (default 224; engines: the model's)"
    )
    p.add_argument("--runs", type=positive_int, default=5, help="timed runs; the median is shown")
    add_shared(p, THREADS, default_text="torch's")
    p.add_argument("--layers", default="torch", choices=["torch", "scratch"], help="layer set")
    p.add_argument(
        "--compare",
        choices=["torch", "scratch", "torchvision"],
        help="also time this layer set, or torchvision's model, and print the ratios",
    )
    p.add_argument("--forward-only", action="store_true", help="skip forward+backward")
    p.add_argument("--memory", action="store_true", help="also measure peak memory per variant")
    add_engine_option(p, default=None)
    p.add_argument("--ladder", action="store_true", help="every engine this machine has")
    p.add_argument("--engines", metavar="A,B,C", help="--ladder: only these engines")
    add_shared(
        p, DATA, default_text="engines: none (seeded random images, no top-1); train: required"
    )
    p.add_argument(
        "--limit", type=positive_int, help="engines: top-1 on N images (a seeded sample)"
    )
    add_calibration_options(p)
    p.add_argument(
        "--latency-runs",
        type=positive_int,
        default=20,
        help="engines: timed single images, for p50/p95 (default 20)",
    )
    p.add_argument(
        "--json", action="store_true", help="engines, bench train: print the result as JSON"
    )
    add_train_bench_options(p)
    p.set_defaults(func=cmd_bench)
