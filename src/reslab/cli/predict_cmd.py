"""``reslab predict``: classify image files (top-k class names and probabilities)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from reslab.cli.engine_args import add_calibration_options, add_engine_option, engine_runner
from reslab.cli.options import TOPK, add_shared
from reslab.inference import predict_files
from reslab.recipes.shared_options import BS, THREADS
from reslab.weights import resolve_model

__all__ = ["register"]


def cmd_predict(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.spec)
    batch = min(args.bs, len(args.images))
    runner = engine_runner(args, model, batch)
    results = predict_files(model, args.images, topk=args.topk, batch_size=batch, runner=runner)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    for r in results:
        if not r.ok:
            print(f"reslab predict: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(r.file)
            for _, name, p in r.classes:
                print(f"  {100 * p:6.2f}%  {name}")
    return 1 if any(not r.ok for r in results) else 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files (top-k class names and probabilities)",
        description="Classify images with a model's own resize/crop and class names. A file "
        "that cannot be read gets a one-line error; the others are still classified and the "
        "exit code is 1.",
    )
    p.add_argument("spec", metavar="MODEL@TAG|CKPT|RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_shared(p, TOPK, 5)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_shared(p, BS, 16)
    add_shared(p, THREADS, default_text="torch's")
    add_engine_option(p)
    add_calibration_options(p)
    p.set_defaults(func=cmd_predict)
