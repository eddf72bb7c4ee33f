"""``reslab train``: train a model; every flag is a :class:`~reslab.recipes.TrainConfig` field."""

from __future__ import annotations

import argparse
import sys

from reslab.analysis import write_report
from reslab.cli import CliError
from reslab.cli.options import add_config_options, config_fields_from_args
from reslab.recipes import TrainConfig, resume_config, run_training
from reslab.recipes.shared_options import RESUME
from reslab.runs import names
from reslab.training import TrainingDiverged, cleanup_distributed, dist_info

__all__ = ["register"]


def cmd_train(args: argparse.Namespace) -> int:
    given = config_fields_from_args(TrainConfig, args)
    cfg = resume_config(args.resume, given) if args.resume else TrainConfig.from_options(given)
    try:
        metrics = run_training(cfg, resume=bool(args.resume))
    except TrainingDiverged as err:
        raise CliError(str(err), code=1) from None
    finally:
        rank = dist_info()[0]
        cleanup_distributed()
    if rank == 0:
        print(
            f"test accuracy {metrics.test_accuracy:.4f}  loss {metrics.test_loss:.4f}  "
            f"({cfg.model} on {cfg.data}, {cfg.epochs} epochs, {metrics.wall_seconds:.0f} s, "
            f"{metrics.samples_per_s} samples/s) -> {cfg.out}"
        )
        if cfg.report:
            _report(cfg.out, cfg.device)
    return 0


def _report(out: str, device: str | None) -> None:
    """The run's report; training succeeded, so a report that fails is a warning."""
    try:
        print(f"wrote {write_report(out, device=device)}")
    except (ValueError, OSError) as err:
        print(f"reslab train: warning: no report: {err}", file=sys.stderr)


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on fashion-mnist, cifar10 or an image folder",
        description=f"Train; writes {names.MODEL}, the checkpoint, {names.HISTORY_CSV}/json, "
        f"{names.CURVES}, {names.METRICS} and {names.REPORT} into --out, and prints the test "
        "accuracy. Under torchrun, --bs is per process.",
    )
    add_config_options(p, TrainConfig, extra=[RESUME])
    p.set_defaults(func=cmd_train)
