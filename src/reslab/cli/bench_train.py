"""``reslab bench train MODEL --data D``: the options and the run behind it (``reslab bench``
hands over when its first word is ``train``)."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from reslab.cli import CliError
from reslab.cli.argtypes import positive_int
from reslab.cli.options import add_shared
from reslab.models import get_model_spec
from reslab.recipes.shared_options import DEVICE, WIDTH
from reslab.recipes.train_bench import bench_train, format_bench, parse_paths

__all__ = ["TRAIN_ONLY", "add_train_bench_options", "cmd_bench_train"]

# Options of `bench train` alone (their defaults tell that they were not given).
TRAIN_ONLY = {"paths": None, "batches": None, "width": None, "device": None}
# Options of the other bench modes that `bench train` refuses (with their defaults).
NOT_FOR_TRAIN = {
    "size": None, "layers": "torch", "compare": None, "forward_only": False, "memory": False,
    "engine": None, "ladder": False, "engines": None, "limit": None, "calib": None,
    "latency_runs": 20,
}  # fmt: skip


def add_train_bench_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "training speed: reslab bench train MODEL --data D",
        "The full Learner against a bare PyTorch loop (same model, weights, batches already on "
        "the device, optimiser and one-cycle schedule), interleaved, on every path this "
        "machine has: eager, channels-last, mixed precision (bf16 where native), torch.compile. "
        "--batch is the training batch (default 256), --runs the timed epochs per side.",
    )
    group.add_argument(
        "model", nargs="?", metavar="MODEL", help="bench train: the registered model to train"
    )
    group.add_argument(
        "--paths",
        metavar="A,B",
        help="bench train: paths to time, each 'eager' or parts joined by '+' from compile, "
        "channels-last (cl), bf16, fp16 (default: eager, channels-last, bf16+channels-last "
        "where bf16 is native, compile+channels-last, compile+bf16+channels-last)",
    )
    group.add_argument(
        "--batches", type=positive_int, help="bench train: batches per timed epoch (default 20)"
    )
    add_shared(group, WIDTH)
    add_shared(group, DEVICE, default_text="bench train: cuda when available")


def check_not_train(args: argparse.Namespace) -> None:
    """Refuse `bench train`'s options in the other bench modes."""
    given = [k for k, default in TRAIN_ONLY.items() if getattr(args, k) != default]
    if args.model is not None or given:
        what = "a second MODEL" if args.model is not None else f"--{given[0].replace('_', '-')}"
        raise CliError(f"{what}: only `reslab bench train MODEL --data D` takes it")


def cmd_bench_train(args: argparse.Namespace) -> int:
    wrong = [k for k, default in NOT_FOR_TRAIN.items() if getattr(args, k) != default]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        raise CliError(f"{flag} does not go with `bench train` (it times inference)")
    if args.model is None:
        raise CliError("bench train needs a MODEL, e.g. `reslab bench train resnet20 --data D`")
    if not args.data:
        raise CliError("bench train needs --data (fashion-mnist, cifar10 or an image folder)")
    get_model_spec(args.model)  # fail early, with close matches, on a typo
    paths = parse_paths(args.paths) if args.paths else None
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA GPU is visible to PyTorch here")
    result = bench_train(
        args.model,
        args.data,
        batch=args.batch or 256,
        steps=args.batches or 20,
        runs=args.runs,
        paths=paths,
        width=args.width,
        data_dir=args.data_dir,
        device=args.device,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_bench(result))
    return 0
