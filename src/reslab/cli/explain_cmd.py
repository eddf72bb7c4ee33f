"""``reslab explain``: where a model looks, per image: its top classes with their heat maps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from reslab.analysis import explain, plot_explanation
from reslab.analysis.explain import percent
from reslab.cli.options import LAYER, METHOD, TOPK, add_shared
from reslab.data import ImageDecodeError
from reslab.files import check_output_dir, check_output_file
from reslab.inference import class_names_of, load_for_model
from reslab.recipes.shared_options import OUT_DIR, THREADS
from reslab.weights import resolve_model

__all__ = ["register"]


def output_paths(images: list[str], out: Path, method: str) -> list[Path]:
    """``OUT/<stem>-<method>.png`` per image. Files with the same stem in different folders
    are told apart by their folder (``cat-0000-…``, ``dog-0000-…``), and any name still
    taken (by another output, or by one of the input images) gets ``-2``, ``-3``…"""
    tag = method.replace("++", "pp")
    stems = [Path(image).stem or "image" for image in images]
    repeated = {s for s in stems if stems.count(s) > 1}
    taken: set[Path] = {Path(image).resolve() for image in images}
    paths = []
    for image, stem in zip(images, stems):
        parent = Path(image).resolve().parent.name
        base = f"{parent}-{stem}" if stem in repeated and parent else stem
        path, n = out / f"{base}-{tag}.png", 1
        while path.resolve() in taken:
            n += 1
            path = out / f"{base}-{n}-{tag}.png"
        taken.add(path.resolve())
        paths.append(path)
    return paths


def cmd_explain(args: argparse.Namespace) -> int:
    # Where every map goes is checked before the model is loaded or any image read.
    paths = output_paths(args.images, check_output_dir(args.out), args.method)
    for path in paths:
        check_output_file(path, inputs=[args.spec, *args.images])
    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.spec)
    names = class_names_of(model)
    failed = 0
    for image, path in zip(args.images, paths):
        try:
            pixels = load_for_model(image, model)
        except (ImageDecodeError, OSError) as err:
            print(f"reslab explain: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        result = explain(
            model, pixels, names, topk=args.topk, target=args.target, method=args.method,
            layer=args.layer,
        )  # fmt: skip
        plot_explanation(result, path, title=f"{Path(image).name}: {result.source}")
        shown = ", ".join(f"{name} {percent(p)}" for _, name, p in result.classes)
        print(f"{image}: {shown} -> {path}")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heat maps of where a model finds its top classes in images (Grad-CAM)",
        description="One PNG per image: the image, then for each of the top-k classes (or the "
        "--class) its class activation map over the image, titled with the class and its "
        "probability. A file that cannot be read gets a one-line error; the others are still "
        "explained and the exit code is 1.",
    )
    p.add_argument("spec", metavar="MODEL@TAG|CKPT|RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    add_shared(p, TOPK, 3)
    p.add_argument(
        "--class", dest="target", metavar="NAME", help="explain this class (name or index) only"
    )
    add_shared(p, METHOD, "gradcam")
    add_shared(p, LAYER)
    add_shared(p, OUT_DIR, ".", default_text="the current folder")
    add_shared(p, THREADS, default_text="torch's")
    p.set_defaults(func=cmd_explain)
