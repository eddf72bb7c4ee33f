"""``reslab finetune`` as a library call: pretrained model → new head → frozen/unfrozen training.

Every flag is a :class:`FinetuneConfig` field. The run writes ``model.safetensors`` (weights,
config, class names, metrics), ``metrics.json`` and ``history.json`` into ``out``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["FinetuneConfig", "run_finetune"]


@dataclass
class FinetuneConfig:
    """Options of one fine-tuning run (the ``reslab finetune`` flags)."""

    source: str
    data: str
    out: str | None = None
    freeze: str = "backbone"
    epochs: int = 3
    bs: int = 64
    lr: float | None = None
    opt: str = "adamw"
    wd: float = 1e-4
    momentum: float = 0.9
    schedule: str = "one-cycle"
    freeze_epochs: int = 1
    lr_mult: float = 1.0
    size: int | None = None
    gray: str = "repeat"
    cache_features: str | None = None
    flip: bool = False
    augment: bool = True
    classes: list[str] | None = None
    valid_pct: float = 0.0
    train_limit: int | None = None
    valid_limit: int | None = None
    data_dir: str | None = None
    workers: int = 2
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    progress: bool = True


def _check(cfg: FinetuneConfig) -> None:
    if cfg.schedule not in ("one-cycle", "constant", "fine-tune"):
        raise ValueError(f"--schedule must be one-cycle, constant or fine-tune, got {cfg.schedule}")
    if cfg.gray not in ("repeat", "conv1"):
        raise ValueError(f"--gray must be repeat or conv1, got {cfg.gray!r}")
    if cfg.cache_features and cfg.freeze != "backbone":
        raise ValueError("--cache-features needs --freeze backbone (fixed embeddings)")
    if cfg.cache_features and cfg.schedule == "fine-tune":
        raise ValueError("--cache-features trains the head only; it cannot --schedule fine-tune")
    if cfg.flip and not cfg.cache_features:
        raise ValueError("--flip-tta applies to --cache-features")
    if cfg.epochs < 0 or cfg.bs < 1:
        raise ValueError("--epochs must be >= 0 and --bs positive")


def _subset(ds, limit: int | None, seed: int):
    if not limit or limit >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=g)[:limit].sort().values)


def _datasets(cfg: FinetuneConfig):
    from reslab.data import load_dataset

    common = {"data_dir": cfg.data_dir, "classes": cfg.classes, "progress": cfg.progress}
    train = load_dataset(cfg.data, "train", valid_pct=cfg.valid_pct, seed=cfg.seed, **common)
    split = "valid" if cfg.valid_pct > 0 else "test"
    valid = load_dataset(cfg.data, split, valid_pct=cfg.valid_pct, seed=cfg.seed, **common)
    return _subset(train, cfg.train_limit, cfg.seed), _subset(valid, cfg.valid_limit, cfg.seed + 1)


def prepare_model(cfg: FinetuneConfig, train_ds, device: torch.device):
    """The pretrained model with a new head for the data's classes, its input size and
    channels set, and the batch transform that feeds it (resize, grey → RGB)."""
    from reslab.api import resolve_model
    from reslab.data import TensorImageDataset
    from reslab.training.finetune import adapt_to_grayscale, resize_and_repeat

    model = resolve_model(cfg.source)
    data_ch = train_ds.num_channels
    if data_ch == 1 and model.in_chans == 3 and cfg.gray == "conv1":
        adapt_to_grayscale(model)
    if data_ch == 3 and model.in_chans == 1:
        raise ValueError("the model takes grey images but the data is RGB")
    model.reset_classifier(len(train_ds.class_names))
    size = cfg.size or int(model.default_cfg.get("input_size", (3, 224, 224))[-1])
    in_memory = isinstance(train_ds, TensorImageDataset)
    model.default_cfg.update(
        input_size=(model.in_chans, size, size),
        class_names=list(train_ds.class_names),
    )
    if in_memory:
        model.default_cfg["crop_pct"] = 1.0  # the small images are resized whole, not cropped
    repeat = model.in_chans if data_ch == 1 and model.in_chans != 1 else None
    transform = resize_and_repeat(size if in_memory else None, repeat)
    return model.to(device), transform, size


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune as configured; write the run folder (when ``cfg.out``); return metrics."""
    from reslab.data import make_loader
    from reslab.training.finetune import FineTuneLearner, fine_tune, freeze, trainable_summary

    t0 = time.perf_counter()
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train_ds, valid_ds = _datasets(cfg)
    model, transform, size = prepare_model(cfg, train_ds, device)
    if cfg.schedule != "fine-tune":
        freeze(model, cfg.freeze)
    if cfg.progress:
        print(
            f"{cfg.source} -> {len(train_ds.class_names)} classes at {size} px; "
            f"{trainable_summary(model)}"
        )

    def loader(ds, train: bool, augment: bool = cfg.augment):
        return make_loader(
            ds, cfg.bs, train=train, device=device, seed=cfg.seed, workers=cfg.workers,
            image_size=size, model_cfg=model.default_cfg, augment=augment,
        )  # fmt: skip

    lr = cfg.lr if cfg.lr is not None else (1e-3 if cfg.opt == "adamw" else 0.01)
    common = {"opt": cfg.opt, "lr": lr, "wd": cfg.wd, "momentum": cfg.momentum,
              "device": device, "progress": cfg.progress, "metrics": ("accuracy",)}  # fmt: skip
    extra: dict[str, Any] = {}
    if cfg.cache_features:
        learn, extra = _cached_learner(cfg, model, train_ds, valid_ds, loader, transform, common)
    else:
        learn = FineTuneLearner(
            model, loader(train_ds, True), loader(valid_ds, False), lr_mult=cfg.lr_mult,
            class_names=train_ds.class_names, **common,
        )  # fmt: skip
        learn.input_transforms.append(transform)
    if cfg.schedule == "fine-tune":
        frozen = cfg.freeze if cfg.freeze != "none" else "backbone"
        fine_tune(learn, cfg.epochs, lr, freeze_epochs=cfg.freeze_epochs, lr_mult=cfg.lr_mult,
                  frozen=frozen)  # fmt: skip
    elif cfg.schedule == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, lr)
    else:
        learn.fit(cfg.epochs, lr)
    history = learn.recorder.history
    valid = history[-1] if history else learn.validate()
    metrics = {
        "valid_accuracy": valid.get("accuracy"),
        "valid_loss": valid.get("valid_loss"),
        "epoch_seconds": [row.get("time") for row in history],
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "train_images": len(train_ds),
        "valid_images": len(valid_ds),
        "size": size,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **extra,
    }
    if cfg.out:
        _write_run(cfg, model, metrics, history)
    return metrics


def _cached_learner(cfg, model, train_ds, valid_ds, loader, transform, common):
    """A Learner over the head alone, fed with embeddings computed once (memory or file)."""
    from reslab.training.feature_cache import (
        FeatureLoader,
        ViewAverage,
        extract_features,
        load_features,
        save_features,
    )
    from reslab.training.finetune import FineTuneLearner

    t0 = time.perf_counter()
    sets = []
    for name, ds in (("train", train_ds), ("valid", valid_ds)):
        meta = {"source": cfg.source, "data": str(cfg.data), "split": name, "n": len(ds),
                "size": model.default_cfg["input_size"][-1], "flip": cfg.flip,
                "gray": cfg.gray, "classes": cfg.classes, "seed": cfg.seed}  # fmt: skip
        path = None
        if cfg.cache_features not in ("memory", "mem"):
            path = Path(cfg.cache_features) / f"features-{name}.safetensors"
        fs = load_features(path, meta) if path else None
        if fs is None:
            fs = extract_features(
                model, loader(ds, False, augment=False), flip=cfg.flip,
                input_transform=transform, class_names=list(ds.class_names),
                progress=cfg.progress, desc=f"features {name}",
            )  # fmt: skip
            if path:
                save_features(path, fs, meta)
        sets.append(fs)
    feature_seconds = time.perf_counter() - t0
    device = common["device"]
    learn = FineTuneLearner(
        ViewAverage(model.fc),
        FeatureLoader(sets[0], cfg.bs, train=True, seed=cfg.seed, device=device),
        FeatureLoader(sets[1], cfg.bs, train=False, seed=cfg.seed, device=device),
        class_names=train_ds.class_names,
        **common,
    )
    return learn, {"feature_seconds": round(feature_seconds, 2)}


def _write_run(cfg: FinetuneConfig, model, metrics: dict, history: list) -> None:
    from reslab.weights.checkpoint import save_checkpoint

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out / "model.safetensors",
        model,
        finetune_config=dataclasses.asdict(cfg),
        metrics={k: metrics[k] for k in ("valid_accuracy", "valid_loss")},
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "history.json").write_text(json.dumps({"history": history}, indent=2))
