"""Keras ResNet-50 features → Imagenette, frozen backbone; and cached vs uncached epoch time.

Part 1 (``accuracy``): ``run_finetune`` with ``--freeze backbone --cache-features DIR`` on
Imagenette (train: a fixed random subset of ``--train-limit`` images, val: all 3,925), a new
10-class head trained with AdamW one-cycle. Reported: val top-1 of the new head, the seconds
spent embedding the images, and per-epoch seconds. From the same cached val embeddings the
*pretrained* 1000-class head gives the converted model's ImageNet predictions on Imagenette
(``fc(backbone(x))`` in eval mode with the model's eval transform, i.e. exactly what
``reslab eval resnet50_v1@keras-imagenet --restrict-classes`` computes): top-1 over 1000
classes and restricted to the 10 classes.

Part 2 (``speed``): the same frozen fine-tune on ``--speed-images`` train images (val 64),
without augmentation, run uncached (the whole network every epoch) and cached (embeddings
once, then the head alone); per-epoch seconds side by side in one process, ratio of the
medians of epochs 2.. (the cached run's first epoch is reported with its embedding time).

Hardware: printed (CPU model, threads, torch version). One run of each; times are single
measurements on a shared machine (other heavy jobs excluded by the lock).

    flock /tmp/reslab-heavy.lock python3 benchmarks/finetune_imagenette.py --part accuracy
    flock /tmp/reslab-heavy.lock python3 benchmarks/finetune_imagenette.py --part speed
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from imagenette_data import imagenette_root

from reslab.models.profile import cpu_name


def pretrained_head_accuracy(val_features: Path) -> dict:
    """ImageNet predictions of the converted model from its cached val embeddings."""
    import reslab
    from reslab.inference import class_names_of, restrict_class_index
    from reslab.transfer import load_features

    model = reslab.create_model("resnet50_v1", pretrained="keras-imagenet").eval()
    fs = load_features(val_features)
    index = torch.tensor(restrict_class_index(class_names_of(model), fs.class_names))
    with torch.no_grad():
        logits = model.fc(fs.features[:, 0])
    n = len(fs.labels)
    return {
        "pretrained_images": n,
        "pretrained_top1_1000": int((logits.argmax(-1) == index[fs.labels]).sum()) / n,
        "pretrained_top1_restricted": int((logits[:, index].argmax(-1) == fs.labels).sum()) / n,
    }


def accuracy(args) -> dict:
    from reslab.recipes import FinetuneConfig, run_finetune

    cache = Path(args.cache or tempfile.mkdtemp(prefix="reslab-feats-"))
    cfg = FinetuneConfig(
        source="resnet50_v1@keras-imagenet", data=str(imagenette_root()), freeze="backbone",
        cache_features=str(cache), epochs=args.epochs, bs=64, lr=1e-3, opt="adamw",
        train_limit=args.train_limit, valid_limit=args.valid_limit, workers=args.workers,
        progress=False, seed=0,
    )  # fmt: skip
    m = run_finetune(cfg).to_dict()
    return {**m, **pretrained_head_accuracy(cache / "features-valid.safetensors")}


def speed(args) -> dict:
    from reslab.recipes import FinetuneConfig, run_finetune

    common = dict(
        source="resnet50_v1@keras-imagenet", data=str(imagenette_root()), freeze="backbone",
        epochs=args.speed_epochs, bs=32, lr=1e-3, train_limit=args.speed_images, valid_limit=64,
        augment=False, workers=args.workers, progress=False, seed=0,
    )  # fmt: skip
    plain = run_finetune(FinetuneConfig(**common)).to_dict()
    cached = run_finetune(FinetuneConfig(**common, cache_features="memory")).to_dict()
    p_med = statistics.median(plain["epoch_seconds"][1:])
    c_med = statistics.median(cached["epoch_seconds"][1:])
    return {
        "images": args.speed_images,
        "uncached_epoch_s": plain["epoch_seconds"],
        "cached_epoch_s": cached["epoch_seconds"],
        "cached_feature_s": cached["feature_seconds"],
        "speedup_epochs_after_first": round(p_med / c_med, 1),
        "uncached_valid_accuracy": plain["valid_accuracy"],
        "cached_valid_accuracy": cached["valid_accuracy"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["accuracy", "speed"], required=True)
    p.add_argument("--train-limit", type=int, default=2000)
    p.add_argument("--valid-limit", type=int, help="default: all 3,925 val images")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--speed-images", type=int, default=256)
    p.add_argument("--speed-epochs", type=int, default=3)
    p.add_argument("--cache", help="folder for the embeddings (default: a temp folder)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    result = accuracy(args) if args.part == "accuracy" else speed(args)
    result.update(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
