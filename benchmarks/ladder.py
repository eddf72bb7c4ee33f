"""The inference ladder of one model: every engine, interleaved, speed and accuracy per rung.

Speed: one batch of real images timed run by run in turn with every other engine (median of
``--runs``), batch-1 latency p50/p95, ratio to torchvision's eager fp32 twin (``--reference
torchvision``, for architectures torchvision has) or to reslab eager. Accuracy: top-1 on
``--data``'s evaluation split (labels matched to the model's classes by WordNet id or name),
int8 calibrated on ``--calib-images`` images of its training split.

    flock /tmp/reslab-heavy.lock python benchmarks/ladder.py resnet50_v1@keras-imagenet \
        --data imagenette --limit 3925 --reference torchvision --json out.json

``--data imagenette`` extracts ``../shared/data``'s Imagenette archives once (see
``imagenette_data.py``); any folder with ``train/`` and ``val/`` class folders, or
``fashion-mnist`` / ``cifar10``, works too.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from reslab.models.profile import cpu_name


def _datasets(name: str):
    from reslab.data import load_dataset

    if name == "imagenette":
        from imagenette_data import imagenette_root

        name = str(imagenette_root())
    return load_dataset(name, "test", progress=False), load_dataset(name, "train", progress=False)


def _eval_batches(dataset, model, limit: int | None, batch: int):
    from reslab.data import make_loader
    from reslab.inference import class_names_of, restrict_class_index

    if limit and limit < len(dataset):
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        dataset = dataset.subset(pick[:limit].sort().values)
    index = torch.tensor(restrict_class_index(class_names_of(model), dataset.class_names))
    loader = make_loader(dataset, batch, train=False, model_cfg=model.default_cfg, workers=1)
    batches = [(x, index[y]) for x, y in loader]  # decoded once, reused by every rung

    def padded():
        # Full batches only, so that compiled engines see no new shape; the pad is not scored.
        for x, y in batches:
            if len(x) < batch:
                x = torch.cat([x, x[:1].expand(batch - len(x), *x.shape[1:])])
            yield x, torch.cat([y, torch.full((batch - len(y),), -1, dtype=y.dtype)])

    return padded


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", help="MODEL@TAG, e.g. resnet50_v1@keras-imagenet")
    p.add_argument("--engines", default=None, help="comma-separated (default: all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", help="imagenette, fashion-mnist, cifar10 or a folder")
    p.add_argument("--limit", type=int, help="evaluate on the first N of a fixed random order")
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--reference", choices=["torchvision", "eager"], default="eager")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()

    import reslab
    from reslab.inference.calibration import calibration_images
    from reslab.inference.engines import ENGINE_NAMES
    from reslab.inference.ladder import format_ladder, run_ladder

    name, _, tag = args.spec.partition("@")
    model = reslab.create_model(name, pretrained=tag or None).eval()
    size = tuple(model.default_cfg["input_size"])
    reference = None
    if args.reference == "torchvision":
        import torchvision

        tv_name = name.removesuffix("_v1")
        reference = getattr(torchvision.models, tv_name)(num_classes=model.num_classes)
    images = calib = eval_data = None
    if args.data:
        evaluation, training = _datasets(args.data)
        calib = calibration_images(training, args.calib_images, model_cfg=model.default_cfg)
        eval_data = _eval_batches(evaluation, model, args.limit, args.batch)
        images = next(iter(eval_data()))[0]
    else:
        images = torch.rand(args.batch, *size, generator=torch.Generator().manual_seed(0))
    load_before = os.getloadavg()
    ladder = run_ladder(
        model,
        images,
        engines=args.engines.split(",") if args.engines else ENGINE_NAMES,
        reference=reference,
        reference_name=args.reference if reference is not None else "reslab",
        calib=calib,
        eval_data=eval_data,
        runs=args.runs,
        latency_runs=args.latency_runs,
        log=lambda m: print(m, flush=True),
    )
    load_after = os.getloadavg()
    print(
        f"# {args.spec}: batch {args.batch}, {size[-1]} px, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {cpu_name()}, load {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(format_ladder(ladder))
    if args.json:
        result = ladder.to_dict() | {
            "spec": args.spec,
            "cpu": cpu_name(),
            "torch": torch.__version__,
            "data": args.data,
            "limit": args.limit,
            "calib_images": args.calib_images if args.data else None,
            "load_average_before_after": [load_before, load_after],
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
