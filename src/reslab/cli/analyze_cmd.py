"""``reslab analyze blocks``: lesions, residual ratios and stage probes of a trained network."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reslab.analysis.blocks import study_blocks
from reslab.analysis.blocks_plot import plot_blocks
from reslab.cli import CliError
from reslab.cli.analyze_explanations import add_explanations
from reslab.cli.analyze_gradients import add_gradients
from reslab.cli.analyze_landscape import add_landscape
from reslab.cli.argtypes import count, positive_int
from reslab.cli.options import add_shared
from reslab.data import load_dataset, make_loader
from reslab.files import atomic_write_json, check_output_dir, check_output_file
from reslab.recipes import subset
from reslab.recipes.shared_options import DATA, DATA_DIR, OUT_DIR
from reslab.runs import claim, names, run_inputs
from reslab.weights import resolve_model, resolve_spec_path

__all__ = ["register"]


def _loader(model, data: str, split: str, data_dir, limit: int, seed: int):
    ds = load_dataset(data, split, data_dir=data_dir, progress=False)
    if ds.num_channels != model.in_chans:
        raise CliError(
            f"the model takes {model.in_chans}-channel images; {data} has {ds.num_channels}"
        )
    if len(ds.class_names) != model.num_classes:
        raise CliError(
            f"the model scores {model.num_classes} classes; {data} has {len(ds.class_names)}"
        )
    return make_loader(
        subset(ds, limit, seed), 256, train=False, model_cfg=model.default_cfg, workers=0
    )


def cmd_blocks(args: argparse.Namespace) -> int:
    path = resolve_spec_path(args.spec)
    out = check_output_dir(args.out or (path.parent if path is not None else "."))
    for name in (names.BLOCKS_JSON, names.BLOCKS_PNG):
        check_output_file(out / name, inputs=run_inputs(args.spec))
    model = resolve_model(args.spec).eval()
    test = _loader(model, args.data, "test", args.data_dir, args.limit, 0)
    train = None
    if args.probe_images:
        train = _loader(model, args.data, "train", args.data_dir, args.probe_images, 1)
    report = study_blocks(model, test, train)
    atomic_write_json(claim(out / names.BLOCKS_JSON), report)
    plot_blocks(report, claim(out / names.BLOCKS_PNG), title=f"{args.spec} on {args.data}")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"base accuracy {report['base_accuracy']:.4f} ({args.data} test)")
        print(f"{'block':<12} {'downsample':>10} {'lesion acc':>10} {'ratio':>7}")
        for b in report["blocks"]:
            acc = f"{b['lesion_accuracy']:.4f}" if b["lesion_accuracy"] is not None else "skipped"
            print(
                f"{b['name']:<12} {str(b['downsample']):>10} {acc:>10} {b['residual_ratio']:7.3f}"
            )
        for s in report["stages"]:
            print(f"probe {s['name']}: {s['probe_accuracy']:.4f}")
    print(f"wrote {Path(out) / names.BLOCKS_JSON} and {names.BLOCKS_PNG}")
    return 0


def register(sub: argparse._SubParsersAction, plots) -> None:
    p = sub.add_parser(
        "analyze",
        help="look inside a network (block lesions, loss landscapes, shattered gradients)",
    )
    kinds = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    b = kinds.add_parser(
        "blocks",
        help="per block: accuracy without it, residual ratio; per stage: a linear probe",
        description="Lesion study (Veit et al. 2016): the test accuracy with each block's "
        "residual branch removed (a plain block becomes an identity where shapes allow); the "
        "residual ratio ‖F(x)‖/‖x‖ per block; and a linear probe on each stage's pooled "
        "features. Writes blocks.json and blocks.png.",
    )
    b.add_argument("spec", metavar="CKPT|RUN_DIR|MODEL@WEIGHTS")
    add_shared(b, DATA, required=True)
    add_shared(b, DATA_DIR)
    b.add_argument(
        "--limit",
        type=positive_int,
        default=2000,
        help="test images to measure on (a fixed random subset; default 2000)",
    )
    b.add_argument(
        "--probe-images",
        type=count,
        default=5000,
        help="training images for the stage probes (0: none; default 5000)",
    )
    add_shared(b, OUT_DIR, default_text=f"beside the checkpoint ({names.BLOCKS_JSON}, png)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.set_defaults(func=cmd_blocks)
    add_explanations(kinds)
    add_landscape(kinds)
    add_gradients(kinds)
