"""``reslab finetune`` as a library call: pretrained model → new head → frozen/unfrozen training.

Every flag is a :class:`FinetuneConfig` field. The run writes the final model (weights,
config, class names, metrics), its config, metrics and history into ``out`` (names in
:mod:`reslab.runs.names`). It shares :func:`~reslab.recipes.run.open_run` with
``reslab train``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reslab.data import TensorImageDataset, load_dataset, make_loader
from reslab.data.datasets import ImageDataset
from reslab.models import ResNet
from reslab.recipes.finetune_config import FinetuneConfig
from reslab.recipes.options import option_specs
from reslab.recipes.run import Run, open_run, saved_run_config
from reslab.recipes.train import subset
from reslab.runs import FinetuneMetrics, History, names, write_history, write_metrics
from reslab.training import Callback, Learner, SaveCheckpoint
from reslab.transfer import (
    FeatureLoader,
    ViewAverage,
    adapt_to_grayscale,
    discriminative_param_groups,
    extract_features,
    fine_tune,
    freeze,
    load_features,
    resize_and_repeat,
    save_features,
    state_digest,
    trainable_summary,
)
from reslab.weights import resolve_model, save_checkpoint

__all__ = ["FinetuneConfig", "finetune_resume_config", "prepare_model", "run_finetune"]


def _datasets(cfg: FinetuneConfig):
    common: dict[str, Any] = {
        "data_dir": cfg.data_dir,
        "classes": cfg.classes,
        "progress": cfg.progress,
    }
    train = load_dataset(cfg.data, "train", valid_pct=cfg.valid_pct, seed=cfg.seed, **common)
    split = "valid" if cfg.valid_pct > 0 else "test"
    valid = load_dataset(cfg.data, split, valid_pct=cfg.valid_pct, seed=cfg.seed, **common)
    return subset(train, cfg.train_limit, cfg.seed), subset(valid, cfg.valid_limit, cfg.seed + 1)


def prepare_model(
    cfg: FinetuneConfig, train_ds: ImageDataset, device: torch.device
) -> tuple[ResNet, Callable[[Tensor], Tensor], int]:
    """The pretrained model with a new head for the data's classes, its input size and
    channels set, and the batch transform that feeds it (resize, grey → RGB)."""
    model = resolve_model(cfg.source)
    data_ch = train_ds.num_channels
    if data_ch == 1 and model.in_chans == 3 and cfg.gray == "conv1":
        adapt_to_grayscale(model)
    if data_ch == 3 and model.in_chans == 1:
        raise ValueError("the model takes grey images but the data is RGB")
    model.reset_classifier(len(train_ds.class_names), class_names=train_ds.class_names)
    size = cfg.size or int(model.config.data.input_size[-1])
    in_memory = isinstance(train_ds, TensorImageDataset)
    changes: dict[str, Any] = {"input_size": (model.in_chans, size, size)}
    if in_memory:
        changes["crop_pct"] = 1.0  # the small images are resized whole, not cropped
    model.set_data_config(**changes)
    repeat = model.in_chans if data_ch == 1 and model.in_chans != 1 else None
    transform = resize_and_repeat(size if in_memory else None, repeat)
    return model.to(device), transform, size


# Options that may change when a run is resumed: they affect speed and display, not results.
FINETUNE_RUNTIME = tuple(f.name for f, spec in option_specs(FinetuneConfig) if spec.runtime)


def finetune_resume_config(
    run_dir: str | Path, changes: dict[str, Any] | None = None
) -> FinetuneConfig:
    """The config of the fine-tuning run saved in ``run_dir``, with runtime ``changes``."""
    return FinetuneConfig.from_dict(
        saved_run_config(run_dir, "finetune_config", changes, FINETUNE_RUNTIME)
    )


def run_finetune(
    cfg: FinetuneConfig, *, resume: bool = False, extra_cbs: tuple[Callback, ...] = ()
) -> FinetuneMetrics:
    """Fine-tune as configured; write the run folder (when ``cfg.out``); return metrics.

    With ``resume`` the run continues from ``cfg.out``'s last checkpoint (written after every
    epoch, and every ``save_every`` batches); ``cfg`` must be the saved one
    (:func:`finetune_resume_config`)."""
    if resume and (cfg.cache_features or not cfg.out):
        raise ValueError("--resume needs a run folder trained without --cache-features")
    existing = "resume" if resume else "overwrite" if cfg.overwrite else "refuse"
    with open_run(
        cfg.out, seed=cfg.seed, device=cfg.device, threads=cfg.threads, existing=existing,
        recipe="finetune",
    ) as run:  # fmt: skip
        train_ds, valid_ds = _datasets(cfg)
        model, transform, size = prepare_model(cfg, train_ds, run.device)
        if cfg.schedule != "fine-tune":
            freeze(model, cfg.freeze)
        if cfg.progress:
            n = len(train_ds.class_names)
            print(f"{cfg.source} -> {n} classes at {size} px; {trainable_summary(model)}")

        def loader(ds, train: bool, augment: bool = cfg.augment):
            return make_loader(
                ds, cfg.bs, train=train, device=run.device, seed=cfg.seed, workers=cfg.workers,
                image_size=size, model_cfg=model.default_cfg, augment=augment,
            )  # fmt: skip

        extra: dict[str, Any] = {}
        if cfg.cache_features:
            learn, extra = _cached_learner(cfg, run, model, (train_ds, valid_ds), loader, transform)
        else:
            learn = _learner(cfg, run, model, loader(train_ds, True), loader(valid_ds, False))
            learn.input_transforms.append(transform)
            if cfg.out:
                meta = {"finetune_config": cfg.to_dict()}
                learn.add_cbs([SaveCheckpoint(run.folder, cfg.save_every, extra=meta)])
        learn.add_cbs(extra_cbs)
        if cfg.out:
            run.begin()  # every input is checked: only now may --overwrite replace the old run
            run.write_config(cfg.to_dict())
        _fit(learn, cfg, run.out if resume else None)
        metrics = _metrics(learn, run, train_ds, valid_ds, size, extra)
        if run.writes:
            _write_outputs(cfg, run, model, metrics, learn.recorder.history)
        return metrics


def _learner(cfg: FinetuneConfig, run: Run, model: torch.nn.Module, train_dl, valid_dl) -> Learner:
    groups = discriminative_param_groups(cfg.lr_mult) if cfg.lr_mult != 1 else None
    return Learner(
        model, train_dl, valid_dl, opt=cfg.opt, lr=cfg.peak_lr, wd=cfg.wd, momentum=cfg.momentum,
        device=run.device, progress=cfg.progress, metrics=("accuracy",), param_groups=groups,
        class_names=train_dl.dataset.class_names,
    )  # fmt: skip


def _fit(learn: Learner, cfg: FinetuneConfig, resume: Path | None) -> None:
    if cfg.schedule == "fine-tune":
        frozen = cfg.freeze if cfg.freeze != "none" else "backbone"
        fine_tune(
            learn, cfg.epochs, cfg.peak_lr, freeze_epochs=cfg.freeze_epochs,
            lr_mult=cfg.lr_mult, frozen=frozen, resume=resume,
        )  # fmt: skip
        return
    if resume:
        learn.resume(resume)
    if cfg.schedule == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, cfg.peak_lr)
    else:
        learn.fit(cfg.epochs, cfg.peak_lr)


def _metrics(
    learn: Learner, run: Run, train_ds, valid_ds, size: int, extra: dict
) -> FinetuneMetrics:
    history = learn.recorder.history
    last = history[-1] if history else {}
    # Measured now when the last epoch has no validation (a callback may end it before).
    valid = last if "accuracy" in last else learn.validate()
    return FinetuneMetrics(
        valid_accuracy=valid["accuracy"],
        valid_loss=valid["valid_loss"],
        epoch_seconds=[row.get("time") for row in history],
        wall_seconds=round(run.seconds(), 2),
        train_images=len(train_ds),
        valid_images=len(valid_ds),
        size=size,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        feature_seconds=extra.get("feature_seconds"),
    )


def _feature_meta(cfg: FinetuneConfig, model: ResNet, split: str, ds) -> dict[str, Any]:
    """What a cached feature file was computed from — the backbone (architecture and weights),
    the images and their transform (the model's data config: size, crop, interpolation,
    normalisation); a file made from anything else is recomputed, never trusted."""
    config = model.config.to_dict()
    config["arch"].pop("num_classes", None)  # the head is not part of the features
    return {
        "weights": state_digest(model.backbone), "model": config, "data": ds.digest(),
        "in_memory": isinstance(ds, TensorImageDataset), "split": split, "n": len(ds),
        "in_chans": model.in_chans, "flip": cfg.flip, "gray": cfg.gray,
    }  # fmt: skip


def _cached_learner(
    cfg: FinetuneConfig, run: Run, model: ResNet, datasets, loader: Callable, transform
) -> tuple[Learner, dict]:
    """A Learner over the head alone, fed with embeddings computed once (memory or file)."""
    t0 = time.perf_counter()
    sets = []
    for name, ds in zip(("train", "valid"), datasets):
        meta = _feature_meta(cfg, model, name, ds)
        path = None
        if cfg.cache_features and cfg.cache_features not in ("memory", "mem"):
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
    learn = Learner(
        ViewAverage(model.fc),
        FeatureLoader(sets[0], cfg.bs, train=True, seed=cfg.seed, device=run.device),
        FeatureLoader(sets[1], cfg.bs, train=False, seed=cfg.seed, device=run.device),
        opt=cfg.opt, lr=cfg.peak_lr, wd=cfg.wd, momentum=cfg.momentum, device=run.device,
        progress=cfg.progress, metrics=("accuracy",), class_names=datasets[0].class_names,
    )  # fmt: skip
    return learn, {"feature_seconds": round(feature_seconds, 2)}


def _write_outputs(
    cfg: FinetuneConfig, run: Run, model: ResNet, metrics: FinetuneMetrics, history
) -> None:
    save_checkpoint(
        run.output(names.MODEL),
        model,
        finetune_config=cfg.to_dict(),
        metrics={"valid_accuracy": metrics.valid_accuracy, "valid_loss": metrics.valid_loss},
    )
    write_metrics(run.folder, metrics)
    write_history(run.folder, History(list(history)))
