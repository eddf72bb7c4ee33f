"""``reslab experiment degradation``: experiments over runs, resumable, with a results table
and a figure."""

from __future__ import annotations

import argparse

from reslab.cli.options import add_config_options, config_fields_from_args
from reslab.recipes.degradation import DegradationConfig, run_degradation

__all__ = ["register"]


def cmd_degradation(args: argparse.Namespace) -> int:
    cfg = DegradationConfig(**config_fields_from_args(DegradationConfig, args))
    results = run_degradation(cfg)
    print(f"{'arm':<12} {'depth':>5} {'train error %':>14} {'test error %':>13}  runs")
    for row in sorted(results["summary"], key=lambda r: (r["arm"], r["depth"])):
        train = row["train_error_mean"]
        shown = f"{100 * train:14.2f}" if train is not None else f"{'-':>14}"
        test = 100 * row["test_error_mean"]
        print(f"{row['arm']:<12} {row['depth']:>5} {shown} {test:13.2f}  {row['n']}")
    print(f"wrote {cfg.out}/results.json, results.md, degradation.png")
    return 0


def register(sub: argparse._SubParsersAction, plots) -> None:
    p = sub.add_parser(
        "experiment",
        help="experiments over many runs (the degradation experiment)",
        description="Run an experiment: every run is an ordinary `reslab train` run folder "
        "under OUT/runs/. Running the same command again skips finished runs and resumes a "
        "killed one; a changed recipe on an existing folder is refused.",
    )
    kinds = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    d = kinds.add_parser(
        "degradation",
        help="plain vs residual networks: deeper plain nets train worse (He et al. Fig. 6)",
        description="Train plain and residual CIFAR networks of several depths with one recipe; "
        "record per epoch the clean training error (eval mode, no augmentation, a fixed subset "
        "of the training images), the running training error and the test error; write "
        "results.json, results.md (next to the paper's numbers) and degradation.png.",
    )
    add_config_options(d, DegradationConfig)
    d.set_defaults(func=cmd_degradation)
