"""``reslab analyze gradients``: shattered gradients (Balduzzi et al. 2017) of plain and residual
networks, at initialisation and trained, over seeds."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tqdm.auto import tqdm

from reslab.analysis.shattered import (
    MAX_LAG,
    POINTS,
    image_segment,
    shattering,
    sweep_line,
)
from reslab.analysis.shattered_plot import plot_gradients, summarize_gradients
from reslab.cli import CliError
from reslab.cli.analysis_targets import (
    Target,
    arm_targets,
    data_images,
    is_experiment,
    model_targets,
)
from reslab.cli.argtypes import count, positive_float, positive_int
from reslab.cli.options import SPLIT, add_shared, add_valued
from reslab.files import atomic_write_json, check_output_dir, check_output_file
from reslab.recipes.shared_options import ARMS, DATA, DATA_DIR, DEPTHS, OUT_DIR, SEEDS
from reslab.runs import claim, run_inputs
from reslab.runs import names as run_names
from reslab.weights import resolve_spec_path

__all__ = ["add_gradients"]

GRADIENTS_FILE = run_names.GRADIENTS_JSON
GRADIENTS_FIGURE = run_names.GRADIENTS_PNG

DEFAULT_ARMS = ["plain", "residual"]
DEFAULT_DEPTHS = [20, 56, 110]


def _trained(spec: str) -> bool:
    return is_experiment(spec) or resolve_spec_path(spec) is not None or "@" in spec


def _targets(args: argparse.Namespace) -> list[Target]:
    seeds = list(range(args.seeds))
    weights = args.weights or "trained"
    if not args.specs:
        if args.weights in ("trained", "both"):
            raise CliError(
                f"--weights {args.weights} needs trained weights: a checkpoint, run "
                "or experiment folder"
            )
        return arm_targets(args.arms or DEFAULT_ARMS, args.depths or DEFAULT_DEPTHS, seeds)
    if (args.arms or args.depths) and not all(is_experiment(s) for s in args.specs):
        raise CliError("--arms and --depths go with an experiment folder, or with no SPEC")
    targets = []
    for spec in args.specs:
        trained = _trained(spec)
        chosen = model_targets([spec], args.arms, args.depths, None if trained else seeds)
        if not trained and args.weights in ("trained", "both"):
            raise CliError(f"{spec}: a model name has no trained weights (try {spec}@TAG)")
        if not trained:  # a model name: fresh networks, one per seed
            chosen = [
                dataclasses.replace(chosen[0], init=True, seed=s, labels={"seed": s}) for s in seeds
            ]
        elif weights != "trained":
            twins = [dataclasses.replace(t, init=True) for t in chosen]
            chosen = twins if args.weights == "init" else chosen + twins
        targets += chosen
    return targets


def _line(model, seed: int, args: argparse.Namespace):
    size = tuple(model.default_cfg.get("input_size", (model.in_chans, 32, 32)))
    if not args.data:
        return sweep_line(size, args.points, seed=seed, span=args.span)
    images, _ = data_images(model, args.data, args.split, args.data_dir, limit=2, seed=seed)
    if len(images) < 2:
        raise CliError(f"{args.data}: fewer than two images")
    return image_segment(images[0], images[1], args.points)


def _entry(target: Target, args: argparse.Namespace) -> dict:
    model = target.build()
    inputs, direction = _line(model, target.seed, args)
    if not 0 <= args.target < model.num_classes:
        raise CliError(f"--target {args.target}: the model has {model.num_classes} outputs")
    result = shattering(
        model, inputs, direction, target=args.target, max_lag=args.max_lag, calibrate=target.init
    )
    return {
        "label": target.label,
        **target.labels,
        "weights": "init" if target.init else "trained",
        "spec": target.spec,
        "model": model.config.name,
        "bn_statistics": "of the line's inputs" if target.init else "the model's running",
        "result": result.to_dict(),
    }


def _print(summary: list[dict]) -> None:
    print(f"{'network':<18} {'weights':<8} {'lag-1 corr':>16} {'corr. length':>16}  seeds")
    for r in summary:
        name = f"{r['arm']}-{r['depth']}" if r["depth"] else str(r["arm"])
        lag1 = f"{r['lag1_mean']:.3f} ± {r['lag1_std']:.3f}"
        if r["correlation_length_mean"] is None:
            length = "> max lag"
        else:
            length = f"{r['correlation_length_mean']:.2f} ± {r['correlation_length_std']:.2f}"
            length += "*" if r["beyond_max_lag"] else ""
        print(f"{name:<18} {r['weights']:<8} {lag1:>16} {length:>16}  {r['n']}")


def cmd_gradients(args: argparse.Namespace) -> int:
    default = args.specs[0] if len(args.specs) == 1 else "."
    if default != "." and not is_experiment(default):
        path = resolve_spec_path(default)
        default = path.parent if path is not None else "."
    out = check_output_dir(args.out or default)
    inputs = [p for spec in args.specs for p in run_inputs(spec)]
    for name in (GRADIENTS_FILE, GRADIENTS_FIGURE):
        check_output_file(Path(out) / name, inputs=inputs)
    targets = _targets(args)
    entries = [_entry(t, args) for t in tqdm(targets, desc="networks", leave=False, disable=None)]
    line = (
        {"kind": "images", "data": args.data, "split": args.split}
        if args.data
        else {"kind": "sweep", "through": "mid-grey (0.5)", "span": args.span}
    )
    report = {
        "version": 1,
        "kind": "gradients",
        "output": f"logit {args.target}",
        "line": {**line, "points": args.points},
        "max_lag": args.max_lag,
        "sources": args.specs or "fresh networks",
        "entries": entries,
        "summary": summarize_gradients(entries),
    }
    atomic_write_json(claim(Path(out) / GRADIENTS_FILE), report)
    plot_gradients(
        report,
        claim(Path(out) / GRADIENTS_FIGURE),
        title=f"shattered gradients: ∂(logit {args.target})/∂x along a line",
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report["summary"])
    print(f"wrote {Path(out) / GRADIENTS_FILE} and {GRADIENTS_FIGURE}")
    return 0


def _line_options(p: argparse.ArgumentParser) -> None:
    add_shared(p, DATA, default_text="none: a sweep; with D, the line joins two of its images")
    add_shared(p, DATA_DIR)
    add_shared(p, SPLIT, "test")
    add_valued(
        p, "--points", positive_int, "N", POINTS, f"inputs along the line (default {POINTS})"
    )
    add_valued(p, "--span", positive_float, "S", 1.0, "a sweep runs over t in [-S, S] (default 1)")
    add_valued(p, "--target", count, "CLASS", 0, "the logit differentiated (default 0)")
    add_valued(
        p, "--max-lag", positive_int, "N", MAX_LAG, f"autocorrelation lags (default {MAX_LAG})"
    )


def add_gradients(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "gradients",
        help="how correlated the input gradient stays along a line of inputs (Balduzzi 2017)",
        description="Shattered gradients as in Balduzzi et al., 'The Shattered Gradients "
        "Problem' (2017): the gradient of one logit with respect to the input at points along "
        "a line (a 1-D sweep through mid-grey, or with --data the segment between two real "
        "images): its autocorrelation (lag-1 value, correlation length), the derivative "
        "along the line and the gradient norm per block. Without SPEC, fresh plain and "
        "residual networks of each depth and seed; with a model name, fresh ones of it; with "
        "a checkpoint, run or degradation experiment folder, the trained weights (--weights "
        "init|both: also fresh twins). Networks at initialisation are measured with BatchNorm "
        "statistics of the line's inputs. Writes gradients.json and gradients.png.",
    )
    p.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="MODEL, MODEL@TAG, CKPT, RUN_DIR or EXPERIMENT_DIR (default: fresh "
        "networks of --arms and --depths)",
    )
    add_shared(p, ARMS, default_text="plain,residual")
    add_shared(p, DEPTHS, default_text="20,56,110")
    add_shared(p, SEEDS, 3, default_text="3 (at initialisation)")
    p.add_argument(
        "--weights",
        choices=["init", "trained", "both"],
        help="with trained weights: measure them, fresh twins, or both (default trained)",
    )
    _line_options(p)
    add_shared(p, OUT_DIR, default_text="beside the model, the experiment folder, or here")
    p.add_argument("--json", action="store_true", help="print gradients.json")
    p.set_defaults(func=cmd_gradients)
