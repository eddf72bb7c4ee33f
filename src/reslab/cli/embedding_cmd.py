"""``reslab embedding MODEL``: a classifier as image embedding + class embeddings + bias."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from reslab.analysis import class_embedding_report
from reslab.analysis.region_demos import check_channels, eval_batches
from reslab.cli.argtypes import count
from reslab.cli.options import add_shared
from reslab.recipes.shared_options import BS, DATA, DATA_DIR
from reslab.weights import resolve_model

__all__ = ["register"]


def cmd_embedding(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    batches: Iterable[Any] = ()
    names = model.config.data.class_names
    if args.data:
        ds, batches = eval_batches(model, args.data, args.data_dir, args.limit, args.bs)
        check_channels(model, ds)
        if len(ds.class_names) != model.num_classes:
            # Labels of another label space (e.g. Imagenette folders under a 1000-class model):
            # the top-1 change rate still holds, accuracies would not.
            batches = ((x, None) for x, _ in batches)
        names = names or (ds.class_names if len(ds.class_names) == model.num_classes else None)
    report = class_embedding_report(model, _progress(batches, args))
    print(report.format(names))
    return 0


def _progress(batches, args):
    if not args.data:
        return batches
    return tqdm(batches, desc="embedding", leave=False, disable=None)  # None: off unless a TTY


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "embedding",
        help="a classifier as image embedding + class embeddings: bias range, top-1 effect",
        description="Split a classifier into backbone, class-embedding table and bias; print "
        "the bias range and, on a data set, how often dropping the bias changes the top-1.",
    )
    e.add_argument("model", help="checkpoint, MODEL@WEIGHTS or MODEL")
    add_shared(e, DATA, default_text="none: the bias range only")
    add_shared(e, DATA_DIR)
    e.add_argument("--limit", type=count, default=0, help="use at most this many images (0: all)")
    add_shared(e, BS, 64)
    e.set_defaults(func=cmd_embedding)
