"""``reslab plot history|lr|decision-regions``: figures of a run folder or of a model's head."""

from __future__ import annotations

import argparse
from pathlib import Path

from reslab.analysis.region_demos import linear_demo, model_regions, vgg_demo
from reslab.cli import CliError
from reslab.cli.argtypes import count, finite_float
from reslab.cli.options import add_shared
from reslab.files import check_output_dir, check_output_file
from reslab.recipes.shared_options import DATA, DATA_DIR, OUT_DIR, OUT_FILE, SEED
from reslab.runs import History, claim, names, read_history, read_lr_find, run_inputs
from reslab.training.plots import plot_history, plot_lr_find, plot_lr_schedule

__all__ = ["register"]


def _history(run: Path) -> History:
    history = read_history(run)
    if history is None:
        raise CliError(f"{run}: no {names.HISTORY_JSON} (is this a `reslab train` run folder?)")
    return history


def cmd_plot_history(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if args.out:
        check_output_file(args.out, inputs=run_inputs(run))
    history = _history(run)
    if not history.rows:
        raise CliError(f"{run / names.HISTORY_JSON}: no epochs recorded")
    out = plot_history(history.rows, claim(Path(args.out or run / names.CURVES)), title=run.name)
    print(f"wrote {out}")
    return 0


def cmd_plot_lr(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if args.out:
        check_output_file(args.out, inputs=run_inputs(run))
    finder = read_lr_find(run)
    if finder is not None:
        out = Path(args.out or run / names.LR_FIND_PNG)
        out = plot_lr_find(finder.lrs, finder.losses, finder.suggestion, claim(out))
    else:
        history = _history(run)
        if not history.batch_lr:
            raise CliError(f"{run}: no {names.LR_FIND_JSON} and no recorded learning rates")
        out = plot_lr_schedule(
            history.batch_lr, history.batches_per_epoch or 1,
            claim(Path(args.out or run / names.LR_SCHEDULE_PNG)),
        )  # fmt: skip
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
    add_shared(p, OUT_FILE, default_text=f"RUN_DIR/{names.CURVES}")
    p.set_defaults(func=cmd_plot_history)
    p = plots.add_parser("lr", help="LR-finder curve (or the LR schedule) of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    add_shared(p, OUT_FILE, default_text=f"RUN_DIR/{names.LR_FIND_PNG}")
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
    add_shared(p, DATA, default_text="fashion-mnist for --head vgg")
    add_shared(p, DATA_DIR)
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
    add_shared(p, SEED, 0)
    add_shared(p, OUT_DIR, ".", default_text="the current folder")
    p.set_defaults(func=cmd_decision_regions)
