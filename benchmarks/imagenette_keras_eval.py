"""Imagenette validation accuracy of the Keras ResNet-50 converted to ``resnet50_v1``.

Measures, in one pass over the images: top-1 over all 1000 ImageNet classes, top-1 restricted
to Imagenette's 10 classes (only their logits compete, as ``reslab eval --restrict-classes``),
and throughput (images/s, decoding included).

Data: ``../shared/data/imagenette2-224sq-val.tar.gz`` (3,925 images squashed to 224x224),
extracted once into the reslab cache (``imagenette_data.py``). Weights:
``resnet50_v1@keras-imagenet`` (make them with ``reslab weights fetch keras-resnet50``).
Preprocessing: the model's default_cfg (resize the short side to 256, centre-crop 224,
bilinear; caffe normalisation inside the model).

Hardware/versions are printed with the result (CPU model, torch threads, torch version).
One run: the accuracy is deterministic; the time is a single measurement.

    flock /tmp/reslab-heavy.lock python3 benchmarks/imagenette_keras_eval.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from imagenette_data import imagenette_root

from reslab.models.profile import cpu_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, help="first N images of a fixed random order")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--threads", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--crop-pct", type=float, help="override the model's crop_pct")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import reslab
    from reslab.data import load_dataset, make_loader
    from reslab.inference import class_names_of, restrict_class_index

    model = reslab.create_model("resnet50_v1", pretrained="keras-imagenet").eval()
    if args.crop_pct:
        model.set_data_config(crop_pct=args.crop_pct)
    ds = load_dataset(imagenette_root(("val",)), "test")
    if args.limit and args.limit < len(ds):
        g = torch.Generator().manual_seed(0)
        ds = ds.subset(torch.randperm(len(ds), generator=g)[: args.limit].sort().values)
    index = torch.tensor(restrict_class_index(class_names_of(model), ds.class_names))
    loader = make_loader(ds, args.bs, train=False, model_cfg=model.default_cfg,
                         workers=args.workers)  # fmt: skip
    correct = restricted = n = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for xb, yb in loader:
            logits = model(xb)
            correct += int((logits.argmax(-1) == index[yb]).sum())
            restricted += int((logits[:, index].argmax(-1) == yb).sum())
            n += len(yb)
    seconds = time.perf_counter() - t0
    result = {
        "images": n,
        "top1_1000": correct / n,
        "top1_restricted_10": restricted / n,
        "seconds": round(seconds, 1),
        "images_per_s": round(n / seconds, 2),
        "crop_pct": model.default_cfg["crop_pct"],
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
