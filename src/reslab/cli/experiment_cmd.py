"""``reslab experiment degradation``: experiments over runs, resumable, with a results table
and a figure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reslab.analysis import write_report
from reslab.cli.options import add_config_options, config_fields_from_args
from reslab.recipes.degradation import DegradationConfig, run_degradation
from reslab.recipes.fastbook import FastbookConfig, run_fastbook

__all__ = ["register"]

# The --help section of --out and --report.
TITLES = {"run": ("experiment folder", "where the runs, the results and the figures are written")}


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
    return _report(cfg.out, cfg.report)


def cmd_fastbook(args: argparse.Namespace) -> int:
    cfg = FastbookConfig(**config_fields_from_args(FastbookConfig, args))
    results = run_fastbook(cfg)
    print(f"{'step':<5} {'model':<22} {'size':>4} {'params':>11} {'acc %':>15} {'book %':>6} "
          f"{'s/run':>6}")  # fmt: skip
    for s in results["summary"]:
        acc = f"{100 * s['accuracy_mean']:.2f}"
        if s["n"] > 1:
            acc += f" ± {100 * s['accuracy_std']:.2f}"
        book = f"{s['book']:.1f}" if s["book"] is not None else "-"
        print(
            f"{s['step']:<5} {s['model']:<22} {s['size']:>4} {s['parameters']:>11,} "
            f"{acc:>15} {book:>6} {s['seconds_mean']:6.0f}"
        )
    figure = ", lr_find.png" if (Path(cfg.out) / "lr_find.png").is_file() else ""
    print(f"wrote {cfg.out}/results.json, results.md, accuracy.png{figure}")
    return _report(cfg.out, cfg.report)


def _report(folder: str, wanted: bool) -> int:
    """The experiment's report.html; the runs succeeded, so a failing report is a warning."""
    if wanted:
        try:
            print(f"wrote {write_report(folder)}")
        except (ValueError, OSError) as err:
            print(f"reslab experiment: warning: no report: {err}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction, plots) -> None:
    p = sub.add_parser(
        "experiment",
        help="experiments over many runs (degradation, fastbook)",
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
    add_config_options(d, DegradationConfig, titles=TITLES)
    d.set_defaults(func=cmd_degradation)
    f = kinds.add_parser(
        "fastbook",
        help="fastbook's ResNet chapter as a progression of five models on Imagenette",
        description="Train, in order, fastbook ch. 14's plain CNN, its ResBlock versions and "
        "its ResNet-18 (--steps 5 or --budget book-r50: its ResNet-50), each with one-cycle, "
        "once per seed; write a table (model, parameters, accuracy mean ± std, seconds) next "
        "to the accuracy the book prints, and how the data and recipe differ from the book's. "
        "--budget book is the chapter's recipe (128 px crops of 160 px images decoded once, "
        "batch 128, Adam at 3e-3 for 5 epochs).",
    )
    add_config_options(f, FastbookConfig, titles=TITLES)
    f.set_defaults(func=cmd_fastbook)
