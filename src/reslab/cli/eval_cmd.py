"""``reslab eval``: accuracy, top-5 and the confusion matrix of a model on a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reslab.analysis import plot_top_losses, top_losses, top_losses_records
from reslab.cli import CliError
from reslab.cli.argtypes import positive_int
from reslab.cli.engine_args import add_calibration_options, add_engine_option, engine_runner
from reslab.cli.options import RESTRICT_CLASSES, SPLIT, add_shared
from reslab.data import load_dataset, make_loader
from reslab.files import atomic_write_json, check_output_file
from reslab.inference import class_names_of, restrict_class_index
from reslab.recipes.shared_options import (
    BS,
    CLASSES,
    DATA,
    DATA_DIR,
    OUT_FILE,
    SKIP_BAD_IMAGES,
    WORKERS,
)
from reslab.runs import claim, run_inputs
from reslab.runs import names as run_names
from reslab.training import evaluate
from reslab.training.plots import format_confusion, plot_confusion
from reslab.weights import resolve_model, resolve_spec_path

__all__ = ["register"]


def _class_index(args: argparse.Namespace, model, dataset) -> list[int] | None:
    """Which of the model's classes the data's labels are (None: the same classes).

    The place for ``--restrict-classes`` (a 1000-class model on Imagenette's 10 classes).
    """
    if args.restrict_classes:
        return restrict_class_index(
            class_names_of(model), dataset.class_names, args.restrict_classes
        )
    n_model, n_data = model.num_classes, len(dataset.class_names)
    if n_model != n_data:
        raise CliError(
            f"the model scores {n_model} classes but the data has {n_data}; "
            "evaluate on the data the model was trained for"
        )
    return None


def cmd_eval(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out, inputs=run_inputs(args.spec))
    if args.amp and args.engine != "eager":
        raise CliError("--amp is bf16 autocast on the eager model; use --engine bf16 instead")
    path = resolve_spec_path(args.spec)
    model = resolve_model(args.spec)
    ds = load_dataset(
        args.data,
        args.split,
        data_dir=args.data_dir,
        classes=args.classes,
        on_error="skip" if args.skip_bad_images else "raise",
    )
    if model.in_chans != ds.num_channels:
        raise CliError(
            f"the model takes {model.in_chans}-channel images; {args.data} has {ds.num_channels}"
        )
    class_index = _class_index(args, model, ds)
    runner = engine_runner(args, model, args.bs)
    loader = make_loader(
        ds, args.bs, train=False, model_cfg=model.default_cfg, workers=args.workers
    )
    result = evaluate(
        model, loader, class_index, class_names=ds.class_names, amp=args.amp, runner=runner
    )
    engine = "" if args.engine == "eager" else f", engine {args.engine}"
    print(f"{args.spec} on {args.data} ({args.split}, {result.count} images{engine})")
    print(f"accuracy {result.accuracy:.4f}  top-5 {result.top5:.4f}  loss {result.loss:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(result.confusion, ds.class_names))
    if args.out:
        out = Path(args.out)
    else:
        out = path.with_name(run_names.CONFUSION) if path is not None else Path(run_names.CONFUSION)
    plot_confusion(
        result.confusion,
        ds.class_names,
        claim(out),
        title=f"accuracy {result.accuracy:.4f} ({result.count} images)",
    )
    print(f"wrote {out}")
    if args.top_losses:
        _write_top_losses(args.top_losses, model, loader, ds, class_index, out)
    if args.json:
        numbers = {"accuracy": result.accuracy, "top5": result.top5, "loss": result.loss}
        print(json.dumps({**numbers, "count": result.count, "engine": args.engine}))
    return 0


def _write_top_losses(n: int, model, loader, ds, class_index, confusion_png: Path) -> None:
    """The ``n`` most confidently wrong images as a grid (with the Grad-CAM of the predicted
    class) and a JSON list, beside the confusion matrix."""
    items = top_losses(model, loader, n, only_wrong=True, class_index=class_index)
    png = confusion_png.with_name(run_names.TOP_LOSSES_PNG)
    listing = confusion_png.with_name(run_names.TOP_LOSSES_JSON)
    records = top_losses_records(items, ds.class_names, getattr(ds, "paths", None))
    atomic_write_json(claim(listing), records)
    if items:
        plot_top_losses(items, ds.class_names, claim(png))
        print(f"wrote {png} and {listing} ({len(items)} wrong images)")
    else:
        print(f"no wrong images: wrote an empty {listing}")


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy and confusion matrix of a model on a data set")
    p.add_argument("spec", metavar="CKPT|RUN_DIR|MODEL@WEIGHTS")
    add_shared(p, DATA, required=True)
    add_shared(p, DATA_DIR)
    add_shared(p, SPLIT, "test")
    add_shared(p, CLASSES)
    add_shared(p, RESTRICT_CLASSES)
    add_shared(p, BS, 256)
    add_shared(p, WORKERS, 2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    add_engine_option(p)
    add_calibration_options(p, data_dir=False)  # --data-dir above serves --calib too
    add_shared(p, SKIP_BAD_IMAGES, False)
    add_shared(p, OUT_FILE, default_text=f"{run_names.CONFUSION} beside the checkpoint")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    p.add_argument(
        "--top-losses",
        type=positive_int,
        metavar="N",
        help="also save the N most confidently wrong images with their Grad-CAM "
        f"({run_names.TOP_LOSSES_PNG} and .json beside the confusion matrix)",
    )
    p.set_defaults(func=cmd_eval)
