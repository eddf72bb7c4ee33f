"""``reslab analyze landscape``: loss landscapes (Li et al. 2018) and Hessian sharpness of one
model or of every arm and depth of a degradation experiment."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reslab.analysis.hessian import hessian_eigenvalues, hessian_trace
from reslab.analysis.landscape import NORMALIZATION_TEXT, Landscape, loss_landscape
from reslab.analysis.landscape_plot import plot_landscapes
from reslab.cli import CliError
from reslab.cli.analysis_targets import data_images, is_experiment, model_targets
from reslab.cli.argtypes import count, positive_float, positive_int
from reslab.cli.options import SPLIT, add_shared, add_valued
from reslab.files import atomic_write_json, check_output_dir, check_output_file
from reslab.recipes.shared_options import ARMS, DATA, DATA_DIR, DEPTHS, OUT_DIR, SEED
from reslab.runs import claim, run_inputs
from reslab.runs import names as run_names
from reslab.weights import resolve_spec_path

__all__ = ["add_landscape"]

LANDSCAPE_FILE = run_names.LANDSCAPE_JSON
LANDSCAPE_FIGURE = run_names.LANDSCAPE_PNG


def _default_out(spec: str) -> Path:
    if is_experiment(spec):
        return Path(spec)
    path = resolve_spec_path(spec)
    return path.parent if path is not None else Path(".")


def _hessian(model, images, labels, args) -> dict:
    images, labels = images[: args.hessian_images], labels[: args.hessian_images]
    start = time.perf_counter()
    values = hessian_eigenvalues(model, images, labels, k=args.eigenvalues, seed=args.seed)
    trace = hessian_trace(model, images, labels, samples=args.trace_samples, seed=args.seed)
    return {
        "eigenvalues": values,
        "trace": trace.value,
        "trace_stderr": trace.stderr,
        "trace_samples": trace.samples,
        "images": len(images),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _entry(target, args, cache: dict) -> dict:
    model = target.build()
    key = (model.in_chans, model.num_classes, tuple(model.default_cfg.get("input_size", ())))
    if key not in cache:  # every run of an experiment sees the same images
        cache[key] = data_images(model, args.data, args.split, args.data_dir, args.limit)
    images, labels = cache[key]
    steps = args.steps**args.dims
    with tqdm(total=steps, desc=target.label, leave=False, disable=None) as bar:
        start = time.perf_counter()
        result = loss_landscape(
            model,
            images,
            labels,
            dims=args.dims,
            steps=args.steps,
            span=args.span,
            seed=args.seed,
            progress=lambda done, total: bar.update(1),
        )
        seconds = time.perf_counter() - start
    entry = {
        "label": target.label,
        **target.labels,
        "spec": target.spec,
        "model": model.config.name,
        "seconds": round(seconds, 1),
        "result": result.to_dict(),
    }
    if args.hessian:
        entry["hessian"] = _hessian(model, images, labels, args)
    return entry


def _hessian_text(h: dict | None) -> str:
    if not h:
        return ""
    values = ", ".join(f"{v:.4g}" for v in h["eigenvalues"])
    return f"λ {values}; trace {h['trace']:.4g} ± {h['trace_stderr']:.2g}"


def _print(report: dict) -> None:
    print(f"{'model':<22} {'loss@0':>8} {'acc@0':>7} {'max loss':>9}  hessian")
    for e in report["entries"]:
        result = Landscape.from_dict(e["result"])
        loss0, acc0 = result.origin()
        top = float(np.nanmax(np.asarray(result.loss, dtype=float)))
        sharpness = _hessian_text(e.get("hessian"))
        print(f"{e['label']:<22} {loss0:8.4f} {acc0:7.4f} {top:9.3f}  {sharpness}")


def cmd_landscape(args: argparse.Namespace) -> int:
    if args.steps % 2 == 0:
        raise CliError(f"--steps {args.steps}: must be odd (the grid's centre is the model)")
    if (args.arms or args.depths) and not is_experiment(args.spec):
        raise CliError("--arms and --depths choose runs of an experiment folder")
    out = check_output_dir(args.out or _default_out(args.spec))
    for name in (LANDSCAPE_FILE, LANDSCAPE_FIGURE):
        check_output_file(out / name, inputs=run_inputs(args.spec))
    targets = model_targets([args.spec], args.arms, args.depths, [args.run_seed])
    cache: dict = {}
    entries = [_entry(target, args, cache) for target in targets]
    images = len(next(iter(cache.values()))[0])
    report = {
        "version": 1,
        "kind": "landscape",
        "dims": args.dims,
        "steps": args.steps,
        "span": args.span,
        "direction_seed": args.seed,
        "normalization": NORMALIZATION_TEXT,
        "objective": "mean cross-entropy, eval mode (BatchNorm running statistics)",
        "source": args.spec,
        "data": {"data": args.data, "split": args.split, "images": images, "subset_seed": 0},
        "entries": entries,
    }
    atomic_write_json(claim(out / LANDSCAPE_FILE), report)
    title = f"loss landscape ({args.dims}-D, filter-normalised) on {args.data} {args.split}"
    plot_landscapes(entries, claim(out / LANDSCAPE_FIGURE), title=title)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    print(f"wrote {out / LANDSCAPE_FILE} and {LANDSCAPE_FIGURE}")
    return 0


def _hessian_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hessian", action="store_true", help="also the top Hessian eigenvalues and the trace"
    )
    add_valued(
        p,
        "--hessian-images",
        positive_int,
        "N",
        250,
        "images for the Hessian: the first of the subset (default 250)",
    )
    add_valued(p, "--eigenvalues", positive_int, "K", 1, "how many top eigenvalues (default 1)")
    add_valued(
        p, "--trace-samples", positive_int, "N", 20, "Rademacher vectors for the trace (default 20)"
    )


def add_landscape(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "landscape",
        help="loss along random filter-normalised directions in weight space (Li et al. 2018)",
        description="Loss landscapes as in Li et al., 'Visualizing the Loss Landscape of Neural "
        "Nets' (2018): the mean cross-entropy (eval mode) and accuracy on a fixed subset of "
        "images at w + a·d1 (+ b·d2): d1, d2 random Gaussian directions with every filter "
        "rescaled to the norm of the same filter of the weights, zero on BatchNorm "
        "parameters and biases. On a degradation experiment folder, every arm and depth "
        "(one seed) side by side. Writes landscape.json and landscape.png (a curve, or "
        "contours with log-spaced levels). --hessian adds the top Hessian eigenvalues (power "
        "iteration) and the trace (Hutchinson).",
    )
    p.add_argument("spec", metavar="MODEL@TAG|CKPT|RUN_DIR|EXPERIMENT_DIR")
    add_shared(p, DATA, required=True)
    add_shared(p, DATA_DIR)
    add_shared(p, SPLIT, "train", default_text="train, as the paper")
    add_valued(
        p, "--limit", positive_int, "N", 1000, "images (a fixed random subset; default 1000)"
    )
    p.add_argument("--dims", type=int, choices=[1, 2], default=1, help="1: a curve, 2: a surface")
    add_valued(
        p,
        "--steps",
        positive_int,
        "N",
        21,
        "grid points per direction, odd (default 21; 2-D: steps² points)",
    )
    add_valued(p, "--span", positive_float, "S", 1.0, "the grid runs from -S to S (default 1)")
    add_shared(p, SEED, 0)  # of the directions
    add_shared(p, ARMS, default_text="an experiment folder's every arm")
    add_shared(p, DEPTHS, default_text="an experiment folder's every depth")
    add_valued(
        p, "--run-seed", count, "N", 0, "experiment folder: the runs of this seed (default 0)"
    )
    _hessian_options(p)
    add_shared(p, OUT_DIR, default_text="beside the model, or the experiment folder")
    p.add_argument("--json", action="store_true", help="print landscape.json")
    p.set_defaults(func=cmd_landscape)
