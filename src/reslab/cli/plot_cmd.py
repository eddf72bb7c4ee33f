"""``reslab plot history|lr|decision-regions``: figures of a run folder or of a model's head."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reslab.analysis.region_demos import linear_demo, model_regions, vgg_demo
from reslab.cli import CliError
from reslab.cli.argtypes import count, finite_float, folder
from reslab.files import check_output_dir, check_output_file
from reslab.training.plots import plot_history, plot_lr_find, plot_lr_schedule

__all__ = ["register"]


def _read_history(run: Path) -> dict:
    path = run / "history.json"
    if not path.is_file():
        raise CliError(f"{run}: no history.json (is this a `reslab train` run folder?)")
    data = _read_json(path)
    epochs = data.get("history", [])
    if not isinstance(epochs, list) or not all(
        isinstance(row, dict) and isinstance(row.get("epoch"), int) for row in epochs
    ):
        raise CliError(f"{path}: 'history' is not a list of epochs (objects with an 'epoch')")
    return data


def _read_json(path: Path) -> dict:
    """A JSON object from a run file; a one-line error for anything else."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _numbers(data: dict, key: str, path: Path) -> list[float]:
    values = data.get(key)
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise CliError(f"{path}: {key!r} is not a list of numbers")
    return values


def cmd_plot_history(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out)
    run = Path(args.run_dir)
    data = _read_history(run)
    out = plot_history(data.get("history", []), args.out or run / "curves.png", title=run.name)
    print(f"wrote {out}")
    return 0


def cmd_plot_lr(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out)
    run = Path(args.run_dir)
    finder = run / "lr_find.json"
    if finder.is_file():
        res = _read_json(finder)
        lrs, losses = _numbers(res, "lrs", finder), _numbers(res, "losses", finder)
        out = plot_lr_find(lrs, losses, res.get("suggestion"), args.out or run / "lr_find.png")
    else:
        data = _read_history(run)
        if not data.get("batch_lr"):
            raise CliError(f"{run}: no lr_find.json and no recorded learning rates")
        out = plot_lr_schedule(
            data["batch_lr"], data.get("batches_per_epoch", 1), args.out or run / "lr_schedule.png"
        )
    print(f"wrote {out}")
    return 0


def cmd_decision_regions(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out)
    if args.resolution < 8:
        raise CliError("--resolution must be at least 8")
    if args.limit < 2:
        raise CliError("--limit must be at least 2 (examples that place the slices)")
    if args.extent is not None and args.extent <= 0:
        raise CliError("--extent must be positive")
    if args.head == "linear":
        if args.classes < 2:
            raise CliError("--classes must be at least 2")
        lines = linear_demo(args, out)
    elif args.head == "vgg":
        if args.epochs < 0:
            raise CliError("--epochs must be >= 0")
        lines = vgg_demo(args, out)
    else:
        lines = model_regions(args, out)
    print("\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = plots.add_parser("history", help="training curves of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot_history)
    p = plots.add_parser("lr", help="LR-finder curve (or the LR schedule) of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/lr_find.png)")
    p.set_defaults(func=cmd_plot_lr)
    p = plots.add_parser(
        "decision-regions",
        help="decision regions of a classifier head over 2-D slices of its input",
        description="Colour each point of 2-D slices of a head's input space by its top-1 "
        "class and write PNGs: a bias-free linear head on 2-D inputs (--head linear), a "
        "VGG-style head trained on Fashion-MNIST pixels vs untrained (--head vgg), or a "
        "model's own linear head over its embedding space (--model).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--head", choices=("linear", "vgg"), help="a demonstration head")
    which.add_argument("--model", help="checkpoint, MODEL@WEIGHTS or MODEL: plot its fc head")
    p.add_argument(
        "--data",
        help="fashion-mnist, cifar10 or an image folder (default for --head vgg: fashion-mnist)",
    )
    p.add_argument("--data-dir", type=folder, help="folder to look for data sets in first")
    p.add_argument(
        "--slices",
        choices=("axes", "examples"),
        default="axes",
        help="axis-aligned slices (default) or planes spanned by pairs of examples",
    )
    p.add_argument("--panels", type=int, default=16, help="slices per head (default 16)")
    p.add_argument(
        "--extent", type=finite_float, help="half-width of each panel (default: from data)"
    )
    p.add_argument("--resolution", type=int, default=120, help="grid points per panel side")
    p.add_argument("--classes", type=int, default=10, help="classes of the --head linear demo")
    p.add_argument("--epochs", type=count, default=3, help="training epochs of the --head vgg demo")
    p.add_argument("--limit", type=int, default=2000, help="examples used to choose slices")
    p.add_argument("--seed", type=count, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.set_defaults(func=cmd_decision_regions)
