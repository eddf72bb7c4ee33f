"""The decision-region figures of ``reslab plot decision-regions``: a bias-free linear head,
a VGG-style head on pixels (trained vs untrained), and a model's own head over its embeddings.

Each function takes the parsed options, writes one PNG into ``out`` and returns the lines that
explain it (what each panel shows)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reslab.analysis.decision import (
    axis_planes,
    cone_disagreement,
    example_planes,
    plot_decision_regions,
)
from reslab.analysis.embeddings import split_class_embedding
from reslab.analysis.heads import fit_head, head_accuracy, linear_head, vgg_head
from reslab.data import TensorImageDataset, load_dataset, make_loader
from reslab.weights import resolve_model

__all__ = ["check_channels", "eval_batches", "linear_demo", "model_regions", "vgg_demo"]

SLICE_TEXT = {
    "axes": "the plane through the origin along input dims i and j (all other dims 0)",
    "examples": "the plane through the origin spanned by two inputs A and B: (1, 0) is A, "
    "(0, 1) is B, points along a ray are that input scaled",
}


def eval_batches(model: nn.Module, data: str, data_dir: str | None, limit: int, bs: int):
    """``(data set, loader)`` of a data set's test split (at most ``limit`` images, a fixed
    random subset), in the model's input form: 0–1 images, the model's resize and crop."""
    ds = load_dataset(data, "test", data_dir=data_dir)
    if limit and limit < len(ds):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit]
        ds = ds.subset(idx.sort().values)
    loader = make_loader(
        ds, bs, train=False, model_cfg=getattr(model, "default_cfg", None), workers=0
    )
    return ds, loader


def check_channels(model: nn.Module, ds) -> None:
    """A clear error when the model and the data disagree on image channels."""
    want = getattr(model, "in_chans", None)
    have = getattr(ds, "num_channels", None)
    if want is not None and have is not None and want != have:
        raise ValueError(f"the model takes {want}-channel images but the data has {have} channels")


# ---------------------------------------------------------------------- decision regions
def _axis_pairs(values: Tensor, panels: int) -> list[tuple[int, int]]:
    # The highest-variance dims carry the data: pair them off, 1st with 2nd, 3rd with 4th, ...
    order = values.var(0).argsort(descending=True)[: 2 * panels].tolist()
    return list(zip(order[0::2], order[1::2]))


def _planes(args, values: Tensor, labels: Tensor, class_names) -> tuple[list, float]:
    if args.panels < 1:
        raise ValueError("--panels must be at least 1")
    if args.slices == "axes":
        if values.shape[1] < 2:
            raise ValueError("need inputs with at least 2 dims")
        pairs = _axis_pairs(values, min(args.panels, values.shape[1] // 2))
        dims = sorted({d for pair in pairs for d in pair})
        extent = 2.0 * float(values[:, dims].abs().quantile(0.99))
        return axis_planes(values.shape[1], pairs), extent or 1.0
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(values), generator=g)[: 2 * args.panels]
    names = [class_names[int(c)] for c in labels[pick]] if class_names else None
    return example_planes(values[pick], names), 1.5


def linear_demo(args, out: Path) -> list[str]:
    """A bias-free linear head on 2-D inputs next to the same head with a bias."""
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


def vgg_demo(args, out: Path) -> list[str]:
    """A VGG-style head trained on a small data set's pixels vs untrained ones."""
    data = args.data or "fashion-mnist"
    train = load_dataset(data, "train", data_dir=args.data_dir)
    test = load_dataset(data, "test", data_dir=args.data_dir)
    if not isinstance(train, TensorImageDataset) or not isinstance(test, TensorImageDataset):
        raise ValueError(
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
    plot_decision_regions(
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


def model_regions(args, out: Path) -> list[str]:
    """A model's own linear head over 2-D slices of its embedding space."""
    if not args.data:
        raise ValueError("--model needs --data (images to place the slices in embedding space)")
    model = resolve_model(args.model).eval()
    backbone, table, bias = split_class_embedding(model)
    ds, loader = eval_batches(model, args.data, args.data_dir, args.limit, 128)
    check_channels(model, ds)
    with torch.no_grad():
        parts = [(backbone(x), y) for x, y in loader]
    emb, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    planes, extent = _planes(args, emb, labels, ds.class_names)
    extent = args.extent or extent
    fc: Any = model.fc  # torch.nn's Linear or the scratch twin
    no_bias = nn.Linear(fc.in_features, fc.out_features, bias=False)
    no_bias.weight = fc.weight
    torch.manual_seed(args.seed)
    untrained = nn.Linear(fc.in_features, fc.out_features)
    heads = {"trained fc": fc, "trained fc without its bias": no_bias, "untrained fc": untrained}
    names = model.config.data.class_names or ds.class_names
    names = names if len(names) == fc.out_features else None
    path = out / f"decision-regions-model-{args.slices}.png"
    arch = model.config.name or type(model).__name__
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
