"""``reslab plot decision-regions`` and ``reslab embedding``: look inside a classifier's head."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from reslab.cli import CliError

__all__ = ["register"]

SLICE_TEXT = {
    "axes": "the plane through the origin along input dims i and j (all other dims 0)",
    "examples": "the plane through the origin spanned by two inputs A and B: (1, 0) is A, "
    "(0, 1) is B, points along a ray are that input scaled",
}


def register(subparsers: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = plots.add_parser(
        "decision-regions",
        help="decision regions of a classifier head over 2-D slices of its input",
        description="Colour each point of 2-D slices of a head's input space by its top-1 "
        "class and write PNGs: a bias-free linear head on 2-D inputs (--head linear), a "
        "VGG-style head trained on Fashion-MNIST pixels vs untrained (--head vgg), or a "
        "model's own linear head over its embedding space (--model).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--head", choices=("linear", "vgg"), help="a demonstration head")
    which.add_argument("--model", help="checkpoint, MODEL@WEIGHTS or MODEL: plot its fc head")
    p.add_argument(
        "--data",
        help="fashion-mnist, cifar10 or an image folder (default for --head vgg: fashion-mnist)",
    )
    p.add_argument("--data-dir", help="folder to look for data sets in first")
    p.add_argument(
        "--slices",
        choices=("axes", "examples"),
        default="axes",
        help="axis-aligned slices (default) or planes spanned by pairs of examples",
    )
    p.add_argument("--panels", type=int, default=16, help="slices per head (default 16)")
    p.add_argument("--extent", type=float, help="half-width of each panel (default: from data)")
    p.add_argument("--resolution", type=int, default=120, help="grid points per panel side")
    p.add_argument("--classes", type=int, default=10, help="classes of the --head linear demo")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the --head vgg demo")
    p.add_argument("--limit", type=int, default=2000, help="examples used to choose slices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.set_defaults(func=cmd_decision_regions)

    e = subparsers.add_parser(
        "embedding",
        help="a classifier as image embedding + class embeddings: bias range, top-1 effect",
        description="Split a classifier into backbone, class-embedding table and bias; print "
        "the bias range and, on a data set, how often dropping the bias changes the top-1.",
    )
    e.add_argument("model", help="checkpoint, MODEL@WEIGHTS or MODEL")
    e.add_argument("--data", help="fashion-mnist, cifar10 or an image folder (test/val split)")
    e.add_argument("--data-dir", help="folder to look for data sets in first")
    e.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    e.add_argument("--bs", type=int, default=64, help="batch size")
    e.set_defaults(func=cmd_embedding)


# ---------------------------------------------------------------------- data
def _eval_batches(model: nn.Module, data: str, data_dir: str | None, limit: int, bs: int):
    """``(images 0–1, labels)`` batches of the data set's test split, in the model's input form."""
    from reslab.data import load_dataset, make_loader

    ds = load_dataset(data, "test", data_dir=data_dir)
    if limit and limit < len(ds):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit]
        ds = ds.subset(idx.sort().values)
    loader = make_loader(
        ds, bs, train=False, model_cfg=getattr(model, "default_cfg", None), workers=0
    )
    return ds, loader


def _check_channels(model: nn.Module, ds) -> None:
    want = getattr(model, "in_chans", None)
    have = getattr(ds, "num_channels", None)
    if want is not None and have is not None and want != have:
        raise CliError(f"the model takes {want}-channel images but the data has {have} channels")


# ---------------------------------------------------------------------- decision regions
def _axis_pairs(values: Tensor, panels: int) -> list[tuple[int, int]]:
    # The highest-variance dims carry the data: pair them off, 1st with 2nd, 3rd with 4th, ...
    order = values.var(0).argsort(descending=True)[: 2 * panels].tolist()
    return list(zip(order[0::2], order[1::2]))


def _planes(args, values: Tensor, labels: Tensor, class_names) -> tuple[list, float]:
    from reslab.analysis import axis_planes, example_planes

    if args.panels < 1:
        raise CliError("--panels must be at least 1")
    if args.slices == "axes":
        if values.shape[1] < 2:
            raise CliError("need inputs with at least 2 dims")
        pairs = _axis_pairs(values, min(args.panels, values.shape[1] // 2))
        dims = sorted({d for pair in pairs for d in pair})
        extent = 2.0 * float(values[:, dims].abs().quantile(0.99))
        return axis_planes(values.shape[1], pairs), extent or 1.0
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(values), generator=g)[: 2 * args.panels]
    names = [class_names[int(c)] for c in labels[pick]] if class_names else None
    return example_planes(values[pick], names), 1.5


def _linear_demo(args, out: Path) -> list[str]:
    from reslab.analysis import linear_head, plot_decision_regions

    torch.manual_seed(args.seed)
    head = linear_head(2, args.classes)
    biased = nn.Linear(2, args.classes)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.uniform_(-0.2, 0.2)
    path = out / "decision-regions-linear.png"
    extent = args.extent or 1.0
    plot_decision_regions(
        {"bias-free linear head": head, "the same with a bias": biased},
        extent=extent,
        resolution=max(args.resolution, 200),
        panel_size=3.0,
        class_names=[f"class {i}" for i in range(args.classes)],
        title=f"Linear head, 2-D input, {args.classes} classes",
        path=path,
    )
    return [
        f"wrote {path}",
        f"  left: a bias-free linear head R^2 -> {args.classes} classes over [-{extent:g}, "
        f"{extent:g}]^2; colour = top-1 class; the regions are sectors around the origin (+)",
        "  right: the same weights plus a bias in [-0.2, 0.2]: straight boundaries that miss "
        "the origin",
    ]


def _vgg_demo(args, out: Path) -> list[str]:
    from reslab.analysis import cone_disagreement, fit_head, head_accuracy, vgg_head
    from reslab.analysis import plot_decision_regions as plot
    from reslab.data import load_dataset

    data = args.data or "fashion-mnist"
    train = load_dataset(data, "train", data_dir=args.data_dir)
    test = load_dataset(data, "test", data_dir=args.data_dir)
    if not hasattr(train, "images"):
        raise CliError(
            f"--head vgg needs a small in-memory data set (fashion-mnist, cifar10), not {data}"
        )
    x = train.images.flatten(1).float() / 255
    xt = test.images.flatten(1).float() / 255
    torch.manual_seed(args.seed)
    classes = len(train.class_names)
    head = vgg_head(x.shape[1], classes)
    heads = {
        "untrained (VGG init: biases 0)": copy.deepcopy(head),
        "untrained (nn.Linear default init: random biases)": vgg_head(
            x.shape[1], classes, init="torch"
        ),
    }
    fit_head(head, x, train.labels, epochs=args.epochs, seed=args.seed)
    heads = {"trained": head, **heads}
    planes, extent = _planes(args, xt[: args.limit], test.labels[: args.limit], test.class_names)
    extent = args.extent or extent
    path = out / f"decision-regions-vgg-{args.slices}.png"
    widths = "-".join(str(m.out_features) for m in head if isinstance(m, nn.Linear))
    plot(
        heads,
        planes,
        extent=extent,
        resolution=args.resolution,
        class_names=test.class_names,
        path=path,
        title=f"VGG-style head {x.shape[1]}-{widths} on {data} pixels",
    )
    lines = [f"wrote {path}"]
    for name, h in heads.items():
        cone = sum(cone_disagreement(h, p, extent=extent, resolution=60) for p in planes)
        lines.append(
            f"  row '{name}': test accuracy {100 * head_accuracy(h, xt, test.labels):.1f} %, "
            f"{100 * cone / len(planes):.1f} % of each panel off its sector (0 = pure sectors)"
        )
    lines.append(
        f"  each panel: {SLICE_TEXT[args.slices]}; inputs are flattened "
        f"{'x'.join(map(str, train.images.shape[1:]))} images scaled to 0-1; "
        f"square [-{extent:.3g}, {extent:.3g}]^2; colour = top-1 class; + = origin"
    )
    return lines


def _model_regions(args, out: Path) -> list[str]:
    from reslab.analysis import plot_decision_regions, split_class_embedding
    from reslab.api import resolve_model

    if not args.data:
        raise CliError("--model needs --data (images to place the slices in embedding space)")
    model = resolve_model(args.model).eval()
    backbone, table, bias = split_class_embedding(model)
    ds, loader = _eval_batches(model, args.data, args.data_dir, args.limit, 128)
    _check_channels(model, ds)
    with torch.no_grad():
        parts = [(backbone(x), y) for x, y in loader]
    emb, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    planes, extent = _planes(args, emb, labels, ds.class_names)
    extent = args.extent or extent
    fc = model.fc
    no_bias = nn.Linear(fc.in_features, fc.out_features, bias=False)
    no_bias.weight = fc.weight
    torch.manual_seed(args.seed)
    untrained = nn.Linear(fc.in_features, fc.out_features)
    heads = {"trained fc": fc, "trained fc without its bias": no_bias, "untrained fc": untrained}
    names = (model.default_cfg or {}).get("class_names") or ds.class_names
    names = names if len(names) == fc.out_features else None
    path = out / f"decision-regions-model-{args.slices}.png"
    arch = (model.default_cfg or {}).get("architecture", type(model).__name__)
    plot_decision_regions(
        heads,
        planes,
        extent=extent,
        resolution=args.resolution,
        class_names=names,
        path=path,
        title=f"{arch} ({Path(args.model).name}): linear head over its "
        f"{fc.in_features}-d embedding",
    )
    brange = "none" if bias is None else f"{float(bias.min()):+.3f} .. {float(bias.max()):+.3f}"
    return [
        f"wrote {path}",
        f"  rows: the model's fc (bias range {brange}), the same without bias, a fresh fc",
        f"  each panel: {SLICE_TEXT[args.slices]} of the embedding space (embeddings of "
        f"{len(emb)} {args.data} test images place the slices); square "
        f"[-{extent:.3g}, {extent:.3g}]^2; colour = top-1 class; + = origin",
        "  a linear head has straight boundaries; without a bias they all meet at the origin",
    ]


def cmd_decision_regions(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.resolution < 8:
        raise CliError("--resolution must be at least 8")
    if args.limit < 2:
        raise CliError("--limit must be at least 2 (examples that place the slices)")
    if args.extent is not None and args.extent <= 0:
        raise CliError("--extent must be positive")
    if args.head == "linear":
        if args.classes < 2:
            raise CliError("--classes must be at least 2")
        lines = _linear_demo(args, out)
    elif args.head == "vgg":
        if args.epochs < 0:
            raise CliError("--epochs must be >= 0")
        lines = _vgg_demo(args, out)
    else:
        lines = _model_regions(args, out)
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------- embedding report
def cmd_embedding(args: argparse.Namespace) -> int:
    from reslab.analysis import class_embedding_report
    from reslab.api import resolve_model

    model = resolve_model(args.model)
    batches, names = (), (getattr(model, "default_cfg", None) or {}).get("class_names")
    if args.data:
        ds, batches = _eval_batches(model, args.data, args.data_dir, args.limit, args.bs)
        _check_channels(model, ds)
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
    from tqdm import tqdm

    return tqdm(batches, desc="embedding", leave=False, disable=None)  # None: off unless a TTY
