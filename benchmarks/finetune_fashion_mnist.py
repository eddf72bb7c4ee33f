"""Fashion-MNIST on frozen Keras ResNet-50 features, at several input resolutions.

For each ``--sizes`` value: ``run_finetune`` with ``--freeze backbone --cache-features`` (in
memory): the 28x28 grey images are resized (bilinear, antialiased) to the size, repeated to 3
channels, embedded once by the frozen ImageNet backbone, and a new 10-class head is trained
(AdamW one-cycle, ``--epochs`` epochs). Train: a fixed random subset of ``--train-limit``
images; test: ``--valid-limit`` images of the official test split. Reported per size: test
accuracy, seconds to embed, seconds per head epoch, wall seconds of the whole run.

(Reference point from the example code this project started from: 86 % after 3 epochs at
224 px with a frozen ResNet-34.)

Hardware: printed (CPU model, threads, torch version). One run per size; times are single
measurements on a shared machine (other heavy jobs excluded by the lock).

    flock /tmp/reslab-heavy.lock python3 benchmarks/finetune_fashion_mnist.py --sizes 32 64 112
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reslab.models.profile import cpu_name


def main() -> None:
    from reslab.recipes import FinetuneConfig, run_finetune

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--train-limit", type=int, default=10000)
    p.add_argument("--valid-limit", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--source", default="resnet50_v1@keras-imagenet")
    p.add_argument("--gray", choices=["repeat", "conv1"], default="repeat")
    p.add_argument("--flip", action="store_true", help="flip views (augment + TTA)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    rows = []
    for size in args.sizes:
        cfg = FinetuneConfig(
            source=args.source, data="fashion-mnist", freeze="backbone", cache_features="memory",
            flip=args.flip, size=size, epochs=args.epochs, bs=128, lr=2e-3, opt="adamw",
            gray=args.gray, train_limit=args.train_limit, valid_limit=args.valid_limit,
            progress=False, seed=0,
        )  # fmt: skip
        m = run_finetune(cfg).to_dict()
        row = {
            "size": size,
            "test_accuracy": m["valid_accuracy"],
            "train_images": m["train_images"],
            "test_images": m["valid_images"],
            "embed_s": m["feature_seconds"],
            "head_epoch_s": m["epoch_seconds"],
            "wall_s": m["wall_seconds"],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"source": args.source, "gray": args.gray, "flip": args.flip, "runs": rows}
    result.update(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
