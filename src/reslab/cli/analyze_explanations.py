"""``reslab analyze explanations``: how faithful each class-map method is (deletion and
insertion curves) and whether its maps depend on the model (cascading randomisation)."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path

import torch

from reslab.analysis import CAM_METHODS
from reslab.analysis.explanations import (
    FLAG_CORRELATION,
    RANDOM,
    RANDOM_COARSE,
    deletion_insertion,
    explanations_report,
    randomization_check,
)
from reslab.analysis.explanations_plot import plot_cascade, plot_explanations
from reslab.analysis.faithfulness import BASELINES, step_counts
from reslab.analysis.sanity import cascade_stages
from reslab.cli import CliError
from reslab.cli.argtypes import names as name_list
from reslab.cli.argtypes import positive_int
from reslab.cli.options import LAYER, SPLIT, add_shared
from reslab.data import load_dataset, make_loader
from reslab.files import atomic_write_json, check_output_dir, check_output_file
from reslab.inference import class_names_of
from reslab.recipes.shared_options import DATA, DATA_DIR, OUT_DIR, PROGRESS, SEED, THREADS
from reslab.runs import claim, names, run_inputs
from reslab.weights import resolve_model, resolve_spec_path

__all__ = ["add_explanations"]

EXPLANATIONS_NAME = names.EXPLANATIONS_JSON
EXPLANATIONS_FIGURE = names.EXPLANATIONS_PNG
CASCADE_FIGURE = names.EXPLANATIONS_CASCADE_PNG
OUTPUTS = (EXPLANATIONS_NAME, EXPLANATIONS_FIGURE, CASCADE_FIGURE)
DESCRIPTION = f"""\
Is a class map faithful to the model? Each method of `reslab explain` explains the
model's top-1 class on N images of a data set, and is measured twice:

  deletion / insertion (Petsiuk et al., RISE, 2018): the pixels are removed (replaced
  by the --baseline image) or revealed, most relevant first, in --steps steps; the
  area under the class probability's curve, mean ± std over the images, against
  random maps: pixel noise, and noise on Grad-CAM's grid upsampled (random blobs of
  Grad-CAM's size). Faithful: a lower deletion and a higher insertion AUC than those.

  model randomisation (Adebayo et al., Sanity Checks for Saliency Maps, 2018): the
  model's stages are re-initialised from the head down, one more at each step (on a
  copy), and each map is compared with the trained model's by Spearman rank
  correlation. A method whose maps still correlate >= {FLAG_CORRELATION} when every stage is
  random is flagged: it shows the image, not what the model learned.

Writes {EXPLANATIONS_NAME}, {EXPLANATIONS_FIGURE} and {CASCADE_FIGURE} (to the run folder
for a RUN_DIR, where `reslab report` shows them)."""
EXAMPLE = """\
example:
  reslab analyze explanations resnet20@reslab-cifar10 --data cifar10 --images 200 --out expl/"""


def _methods(chosen: list[str] | None) -> list[str]:
    methods = list(dict.fromkeys(chosen or CAM_METHODS))
    for m in methods:
        if m not in CAM_METHODS:
            close = difflib.get_close_matches(m, CAM_METHODS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise CliError(f"--methods: unknown method {m!r}{hint} (choose from "
                           f"{', '.join(CAM_METHODS)})")  # fmt: skip
    return methods


def _images(model, args: argparse.Namespace) -> tuple[torch.Tensor, list[int]]:
    """A fixed random subset (by ``--seed``) of the split, as the model takes it."""
    ds = load_dataset(args.data, args.split, data_dir=args.data_dir, progress=False)
    if ds.num_channels != model.in_chans:
        raise CliError(
            f"the model takes {model.in_chans}-channel images; {args.data} has {ds.num_channels}"
        )
    g = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(ds), generator=g)[: args.images].sort().values
    loader = make_loader(ds.subset(chosen), 64, train=False, model_cfg=model.default_cfg, workers=0)
    return torch.cat([x for x, _ in loader]), [int(i) for i in chosen]


def _bar(total: int, enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="explanations", unit="pass", file=sys.stderr)
    return bar, lambda: bar.update(1)


def cmd_explanations(args: argparse.Namespace) -> int:
    methods = _methods(args.methods)
    path = resolve_spec_path(args.spec)
    out = check_output_dir(args.out or (path.parent if path is not None else "."))
    for name in OUTPUTS:
        check_output_file(out / name, inputs=run_inputs(args.spec))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.spec).eval()
    images, indices = _images(model, args)
    step_counts(images.shape[-2] * images.shape[-1], args.steps)  # a bad --steps: one line
    options = {"methods": methods, "layer": args.layer, "seed": args.seed}
    stages = cascade_stages(model) if args.randomization else []
    bar, tick = _bar(len(methods) + 2 + (len(stages) + 1 if stages else 0), args.progress)
    start = time.perf_counter()
    try:
        faith = deletion_insertion(
            model, images, steps=args.steps, baseline=args.baseline, batch_size=args.batch_size,
            progress=tick, **options,
        )  # fmt: skip
        check = None
        if stages:
            check = randomization_check(model, images, target=faith.target, progress=tick,
                                        **options)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    class_names = class_names_of(model)
    report = explanations_report(
        faith, check, model=args.spec, data=args.data, split=args.split, image_indices=indices,
        target_names=[class_names[int(t)] for t in faith.target], layer=args.layer,
        seconds=round(time.perf_counter() - start, 1), threads=torch.get_num_threads(),
        torch=torch.__version__,
    )  # fmt: skip
    title = f"{args.spec} on {Path(args.data).name or args.data}, {len(images)} images"
    atomic_write_json(claim(out / EXPLANATIONS_NAME), report)
    plot_explanations(report, claim(out / EXPLANATIONS_FIGURE), title=title)
    written = [EXPLANATIONS_NAME, EXPLANATIONS_FIGURE]
    if check is not None:
        plot_cascade(check, images[0], claim(out / CASCADE_FIGURE), class_names=class_names)
        written.append(CASCADE_FIGURE)
    if args.json:  # stdout is the JSON alone
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    done = f"wrote {out / written[0]} and {', '.join(written[1:])}"
    print(done, file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_summary(report: dict) -> None:
    faith = report["faithfulness"]
    print(f"{faith['images']} images, {faith['steps']} steps, baseline {faith['baseline']}")
    print(f"{'method':<14} {'deletion AUC (lower better)':>28} {'insertion AUC (higher)':>24}")
    for m in faith["methods"]:
        d, i = faith["deletion"][m]["auc"], faith["insertion"][m]["auc"]
        shown = f"{d['mean']:.3f} ± {d['std']:.3f}", f"{i['mean']:.3f} ± {i['std']:.3f}"
        print(f"{m:<14} {shown[0]:>28} {shown[1]:>24}")
    rand = report.get("randomization")
    if rand is None:
        return
    header = "".join(f" {m:>16}" for m in rand["methods"])
    print(f"randomised (cumulative) {'top-1 kept':>10}{header}   (rank correlation)")
    for s in rand["steps"]:
        corr = "".join(
            f" {s['correlation'][m]['mean']:>8.3f} ± {s['correlation'][m]['std']:.2f}"
            for m in rand["methods"]
        )
        print(f"{'+ ' + s['randomized']:<23} {s['top1_agreement']:>10.3f}{corr}")
    flagged = rand["flagged"]
    verdict = ", ".join(flagged) if flagged else "none"
    print(f"flagged (still ≥ {rand['flag_threshold']} when fully random): {verdict}")


def add_explanations(kinds: argparse._SubParsersAction) -> None:
    """Add ``reslab analyze explanations`` to the ``analyze`` sub-commands."""
    e = kinds.add_parser(
        "explanations",
        help="are the class maps faithful? deletion/insertion curves and a randomisation check",
        description=DESCRIPTION,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("spec", metavar="CKPT|RUN_DIR|MODEL@WEIGHTS")
    add_shared(e, DATA, required=True)
    add_shared(e, DATA_DIR)
    add_shared(e, SPLIT, "test")
    e.add_argument(
        "--images",
        type=positive_int,
        default=100,
        metavar="N",
        help="images to measure, a fixed random subset (default 100)",
    )
    e.add_argument(
        "--steps",
        type=positive_int,
        default=20,
        metavar="S",
        help="points of each curve after the first (default 20: 5%% of the pixels per step)",
    )
    e.add_argument(
        "--baseline",
        choices=BASELINES,
        default="blur",
        help="what removed pixels become: the image blurred, or its mean colour (default: blur)",
    )
    e.add_argument(
        "--methods",
        type=name_list,
        metavar="LIST",
        help=f"comma-separated, some of {','.join(CAM_METHODS)} (default: all); "
        f"random maps are always added: {RANDOM} (pixel noise) and {RANDOM_COARSE} (noise on "
        "Grad-CAM's grid, upsampled)",
    )
    add_shared(e, LAYER)
    add_shared(e, SEED, 0)  # picks the images, the random maps and the random weights
    e.add_argument(
        "--no-randomization",
        dest="randomization",
        action="store_false",
        help="skip the model-randomisation check",
    )
    e.add_argument(
        "--batch-size",
        type=positive_int,
        default=128,
        metavar="B",
        help="perturbed images per forward pass (memory only; default 128)",
    )
    add_shared(e, OUT_DIR, default_text="beside the checkpoint, or .")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    add_shared(e, THREADS)
    add_shared(e, PROGRESS, True)
    e.set_defaults(func=cmd_explanations)
