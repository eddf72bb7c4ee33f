"""``reslab report``: one self-contained HTML page about a run, an experiment, or a model
on a data set."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from reslab.analysis import REPORT_NAME, build_model_report, write_report
from reslab.cli import CliError
from reslab.cli.argtypes import count, positive_int
from reslab.cli.options import LAYER, METHOD, RESTRICT_CLASSES, SPLIT, add_shared
from reslab.data import load_dataset
from reslab.files import atomic_write_text, check_output_file
from reslab.inference import class_names_of, restrict_class_index
from reslab.recipes.shared_options import DATA, DATA_DIR, DEVICE, OUT_FILE
from reslab.runs import run_inputs
from reslab.weights import resolve_model

__all__ = ["register"]


def _options(args: argparse.Namespace) -> dict:
    limit = None if args.all else args.limit
    return {"limit": limit, "top": args.top_losses, "method": args.method, "layer": args.layer}


def _command(args: argparse.Namespace) -> list[str]:
    """The command line that makes this report again."""
    argv = ["reslab", "report", args.target, "--data", args.data, "--split", args.split]
    flags = {"--data-dir": args.data_dir, "--restrict-classes": args.restrict_classes,
             "--method": args.method, "--layer": args.layer}  # fmt: skip
    for flag, value in flags.items():
        if value:
            argv += [flag, value]
    argv += ["--all"] if args.all else ["--limit", str(args.limit)]
    return [*argv, "--top-losses", str(args.top_losses)]


def _model_report(args: argparse.Namespace) -> Path:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = resolve_model(args.target).to(device)
    ds = load_dataset(args.data, args.split, data_dir=args.data_dir, progress=False)
    class_index = names = None
    if args.restrict_classes:
        model_names = class_names_of(model)
        class_index = restrict_class_index(model_names, ds.class_names, args.restrict_classes)
        names = [model_names[i] for i in class_index]
    elif model.num_classes != len(ds.class_names):
        raise CliError(
            f"the model scores {model.num_classes} classes but the data has "
            f"{len(ds.class_names)}; pass --restrict-classes"
        )
    html = build_model_report(
        model, ds, spec=args.target, data=args.data, split=args.split, argv=_command(args),
        class_index=class_index, class_names=names, **_options(args),
    )  # fmt: skip
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{args.target}-{Path(args.data).name}").strip("-")
    return atomic_write_text(Path(args.out or f"report-{slug}.html"), html)


def report_inputs(target: Path) -> list[Path]:
    """Every file a report of ``target`` may read: a run's records; an experiment's recipe,
    results, figures and its runs' records; or the model file."""
    if not target.is_dir():
        return run_inputs(target)
    found = [p for p in target.rglob("*") if p.name != REPORT_NAME and not p.is_dir()]
    return [*found, *run_inputs(target)]


def cmd_report(args: argparse.Namespace) -> int:
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CliError(f"--device {args.device}: no CUDA GPU is visible to PyTorch here")
    if args.out:
        check_output_file(args.out, inputs=report_inputs(Path(args.target)))
    if args.data:
        path = _model_report(args)
    elif args.restrict_classes or args.data_dir:
        raise CliError("--data-dir and --restrict-classes go with --data (a model's report)")
    else:
        path = write_report(args.target, args.out, device=args.device, **_options(args))
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help=f"write FOLDER/{REPORT_NAME}: a run's or an experiment's self-contained page",
        description="A run folder gets its command and config, data, training curves, "
        "metrics, per-class accuracy, confusion matrix, top losses with their class "
        "activation maps and the environment; an experiment folder (experiment.json, or "
        "results.md/.json/.csv) its figures and tables. With --data, TARGET is a model "
        "(MODEL@TAG, CKPT, RUN_DIR) and the page shows it on that data. One HTML file: "
        "images embedded, no script, nothing fetched from a network.",
    )
    p.add_argument("target", metavar="RUN_DIR|EXPERIMENT_DIR|MODEL@TAG")
    add_shared(p, OUT_FILE, default_text=f"FOLDER/{REPORT_NAME}")
    add_shared(p, DATA, default_text="none: TARGET is a run or an experiment folder")
    add_shared(p, DATA_DIR)
    add_shared(p, SPLIT, "test")
    add_shared(p, RESTRICT_CLASSES)
    p.add_argument(
        "--limit",
        type=positive_int,
        default=2000,
        metavar="N",
        help="analyse at most N test images, a fixed random subset (default 2000)",
    )
    p.add_argument("--all", action="store_true", help="analyse every test image")
    p.add_argument(
        "--top-losses", type=count, default=12, metavar="N", help="wrong images shown (default 12)"
    )
    add_shared(p, METHOD, "gradcam")
    add_shared(p, LAYER)
    add_shared(p, DEVICE, default_text="cuda when available")
    p.set_defaults(func=cmd_report)
