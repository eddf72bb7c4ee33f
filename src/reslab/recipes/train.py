"""``reslab train`` as a library call: data → model → Learner → fit → test → run folder.

Everything the command line can do is a :class:`TrainConfig` field, so a run can be started
(and resumed) from Python exactly as from the shell. The config travels inside every
checkpoint, which is how ``--resume RUN_DIR`` rebuilds the same run, and the resume policy
(what may change on resume) is checked here, for Python callers too.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import torch

from reslab.data import TensorImageDataset, load_dataset, make_loader
from reslab.data.datasets import ImageDataset
from reslab.files import FolderLock
from reslab.models import ResNet, get_model_spec
from reslab.recipes.options import option_specs
from reslab.recipes.run import Run, open_run, saved_run_config
from reslab.recipes.train_config import TrainConfig
from reslab.runs import LrFind, TrainMetrics, names, write_lr_find, write_metrics
from reslab.training import (
    EMA,
    Callback,
    ChannelsLast,
    Compile,
    CSVLogger,
    ExtraValidation,
    GradientAccumulation,
    GradientClip,
    Learner,
    MixedPrecision,
    NegativeSamplingCallback,
    SaveCheckpoint,
    StepSchedule,
    TensorBoardCallback,
    add_checkpoint_meta,
    bf16_is_fast,
    convert_sync_batchnorm,
    lr_find,
    param_groups,
    read_checkpoint_meta,
)
from reslab.training.plots import plot_history, plot_lr_find
from reslab.weights import create_model

__all__ = [
    "RUNTIME_OPTIONS",
    "build_model_for_data",
    "load_splits",
    "resume_config",
    "run_training",
    "subset",
]

# Options that may change when a run is resumed: they affect speed and display, not results.
RUNTIME_OPTIONS = tuple(f.name for f, spec in option_specs(TrainConfig) if spec.runtime)


def resume_config(run_dir: str | Path, changes: dict[str, Any] | None = None) -> TrainConfig:
    """The config of the run saved in ``run_dir``, with runtime ``changes`` (threads, device,
    workers, progress) applied; any other change is refused: a resume continues the same run."""
    saved = saved_run_config(run_dir, "train_config", changes, RUNTIME_OPTIONS)
    return TrainConfig.from_dict(saved)


def subset(ds: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    """A fixed random subset of ``limit`` samples (the whole data set when it is smaller)."""
    if not limit or limit >= len(ds):
        return ds
    g = torch.Generator().manual_seed(seed)
    return ds.subset(torch.randperm(len(ds), generator=g)[:limit].sort().values)


def load_splits(cfg: TrainConfig, rank: int = 0) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """``(train, valid, test)`` data sets; valid is the test split unless ``valid_pct``."""
    common: dict[str, Any] = {
        "data_dir": cfg.data_dir,
        "classes": cfg.classes,
        "seed": cfg.seed,
        "on_error": "skip" if cfg.skip_bad_images else "raise",
        "progress": cfg.progress and rank == 0,
        "presize": cfg.presize if cfg.cache_images else None,
    }
    train = load_dataset(cfg.data, "train", valid_pct=cfg.valid_pct, **common)
    if cfg.presize and not cfg.cache_images and isinstance(train, TensorImageDataset):
        raise ValueError(
            f"--presize with --no-cache-images: {cfg.data}'s images are small enough to be held "
            "in memory as they are (64 px or less), where presizing needs the decoded-image "
            "cache; drop --no-cache-images"
        )
    test = load_dataset(cfg.data, "test", **common)
    valid = (
        load_dataset(cfg.data, "valid", valid_pct=cfg.valid_pct, **common)
        if cfg.valid_pct
        else test
    )
    return subset(train, cfg.train_limit, cfg.seed), valid, test


def build_model_for_data(cfg: TrainConfig, train_ds: ImageDataset, device: torch.device) -> ResNet:
    """The model for this data: class count and names, input channels, and for in-memory small
    images the data set's own normalisation and (for ImageNet-style nets) the small-input stem."""
    spec = get_model_spec(cfg.model)
    overrides: dict[str, Any] = {}
    normalize: Any = True
    native_small = spec.arch.get("small_input", False)
    if isinstance(train_ds, TensorImageDataset):  # in memory
        mean, std = train_ds.stats()
        normalize = {"mean": mean, "std": [max(s, 1e-3) for s in std]}
        if cfg.small_input != "off" and not native_small:
            overrides["small_input"] = True
    elif cfg.small_input == "on":
        overrides["small_input"] = True
    if cfg.width is not None:
        overrides["width"] = cfg.width
    if cfg.drop_path:
        overrides["drop_path_rate"] = cfg.drop_path
    if cfg.init is not None:
        overrides["init"] = cfg.init
    model = create_model(
        cfg.model,
        num_classes=len(train_ds.class_names),
        in_chans=train_ds.num_channels,
        normalize=normalize,
        **overrides,
    )
    changes: dict[str, Any] = {"class_names": tuple(train_ds.class_names)}
    if isinstance(train_ds, TensorImageDataset):
        if cfg.size and (cfg.size, cfg.size) != tuple(train_ds.image_size):
            raise ValueError(f"--size {cfg.size}: {cfg.data} holds {train_ds.image_size} images")
        changes.update(input_size=(train_ds.num_channels, *train_ds.image_size), crop_pct=1.0)
    else:
        if cfg.size:
            changes.update(input_size=(train_ds.num_channels, cfg.size, cfg.size))
        if cfg.presize:  # evaluated on the whole presized square: a resize, no crop
            changes.update(crop_pct=1.0)
    model.set_data_config(**changes)
    return model.to(device)


def _callbacks(cfg: TrainConfig, out: Path, train_ds) -> list[Callback]:
    cbs: list[Callback] = []
    if cfg.loss == "nce":
        counts = torch.bincount(train_ds.labels, minlength=len(train_ds.class_names))
        cbs.append(NegativeSamplingCallback(cfg.negatives, "uniform", class_counts=counts))
    if cfg.amp:
        cbs.append(MixedPrecision(cfg.amp_dtype))
    if cfg.channels_last:
        cbs.append(ChannelsLast())
    if cfg.compile:
        cbs.append(Compile())
    if cfg.accum > 1:
        cbs.append(GradientAccumulation(cfg.accum))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    if cfg.ema:
        cbs.append(EMA(cfg.ema))
    cbs.append(CSVLogger(out))
    if cfg.tensorboard:
        cbs.append(TensorBoardCallback(out / names.TENSORBOARD))
    extra = {"train_config": cfg.to_dict()}
    cbs.append(SaveCheckpoint(out, every_n_steps=cfg.save_every, extra=extra))
    return cbs


def _check_resume(cfg: TrainConfig) -> None:
    saved = resume_config(cfg.out)
    mine = {k: v for k, v in cfg.to_dict().items() if k not in (*RUNTIME_OPTIONS, "out", "amp")}
    theirs = {k: v for k, v in saved.to_dict().items() if k in mine}
    changed = sorted(k for k in mine if mine[k] != theirs.get(k))
    if changed:
        raise ValueError(f"--resume continues the saved run; cannot change: {', '.join(changed)}")


def run_training(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    extra_cbs: tuple[Callback, ...] = (),
    lock: FolderLock | None = None,
) -> TrainMetrics:
    """Train as configured, write the run folder, return the final metrics.

    Files in ``cfg.out`` (names in :mod:`reslab.runs.names`): the final model, the checkpoint
    and its state file (resume point), the history (CSV and JSON), the curves, the metrics,
    the config, the command log, the ledger and, with ``lr_find``, the LR finder's sweep and
    figure.

    With ``resume`` the run continues from ``cfg.out``'s checkpoint; ``cfg`` must be the
    saved config (:func:`resume_config`), up to the runtime options. With ``overwrite`` the
    previous run is replaced only once the data are loaded and the model is built. ``lock``:
    the run folder's lock when the caller holds it already (an experiment).
    """
    if resume:
        _check_resume(cfg)
    existing = "resume" if resume else "overwrite" if cfg.overwrite else "refuse"
    with open_run(
        cfg.out,
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        deterministic=cfg.deterministic,
        existing=existing,
        recipe="train",
        lock=lock,
    ) as run:
        if cfg.amp is None:
            cfg = dataclasses.replace(cfg, amp=bf16_is_fast(run.device))
        train_ds, valid_ds, test_ds = load_splits(cfg, run.dist.rank)
        model = build_model_for_data(cfg, train_ds, run.device)
        if cfg.sync_bn and run.dist.world_size > 1:
            converted = convert_sync_batchnorm(model, run.device)
            assert isinstance(converted, ResNet)  # only a BatchNorm root is replaced
            model = converted

        def loader(ds, train: bool):
            return make_loader(
                ds, cfg.bs, train=train, device=run.device, seed=cfg.seed, workers=cfg.workers,
                model_cfg=model.default_cfg, augment=cfg.augment, rank=run.dist.rank,
                world_size=run.dist.world_size, presize=cfg.presize, min_scale=cfg.min_scale,
                square_crops=cfg.square_crops,
            )  # fmt: skip

        if cfg.train_eval:
            subset_dl = loader(subset(train_ds, cfg.train_eval, cfg.seed + 1), False)
            extra_cbs = (ExtraValidation(subset_dl, "train_eval"), *extra_cbs)
        learn = _learner(
            cfg, run, model, loader(train_ds, True), loader(valid_ds, False), train_ds, extra_cbs
        )
        run.begin()  # every input is checked: only now may an --overwrite replace the old run
        run.write_config(cfg.to_dict())
        if resume:
            learn.resume(run.folder)
            learn.lr = read_checkpoint_meta(run.folder / names.CHECKPOINT).get("peak_lr", learn.lr)
        elif cfg.lr_find:
            learn.lr = _run_lr_find(learn, run, use_suggestion=cfg.lr is None)
        # lr_find's suggestion exists only in this process: checkpoints keep it for --resume.
        add_checkpoint_meta(learn, peak_lr=learn.lr)
        _fit(learn, cfg)
        return _finish(cfg, learn, loader(test_ds, False), run, resume)


def _learner(cfg: TrainConfig, run: Run, model, train_dl, valid_dl, train_ds, extra_cbs) -> Learner:
    lr = cfg.peak_lr * (run.dist.world_size if cfg.scale_lr else 1)  # linear scaling rule
    return Learner(
        model,
        train_dl,
        valid_dl,
        loss_func=torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        metrics=("accuracy", "top5"),
        opt=cfg.opt,
        lr=lr,
        wd=cfg.wd,
        momentum=cfg.momentum,
        param_groups=_adam_groups(cfg) if cfg.opt == "adamw" else None,
        device=run.device,
        class_names=train_ds.class_names,
        progress=cfg.progress,
        cbs=[*_callbacks(cfg, run.folder, train_ds), *extra_cbs],
    )


def _adam_groups(cfg: TrainConfig):
    """Parameter groups (no weight decay on norms and biases) carrying AdamW's betas and eps:
    torch's AdamW takes a group's own values over its defaults."""
    betas = (cfg.momentum, cfg.beta2)

    def groups(model: torch.nn.Module, wd: float) -> list[dict]:
        return [{**g, "betas": betas, "eps": cfg.eps} for g in param_groups(model, wd)]

    return groups


def _fit(learn: Learner, cfg: TrainConfig) -> None:
    if cfg.schedule == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, learn.lr, pct_start=cfg.pct_start, div_final=cfg.div_final)
    elif cfg.schedule == "step":
        milestones = tuple(cfg.milestones or ())  # (TrainConfig requires them for "step")
        schedule = StepSchedule(learn.lr, milestones, warmup=cfg.warmup_epochs)
        learn.fit(cfg.epochs, learn.lr, cbs=[schedule])
    else:
        learn.fit(cfg.epochs, learn.lr)


def _run_lr_find(learn: Learner, run: Run, use_suggestion: bool) -> float:
    res = lr_find(learn)
    if run.writes:
        write_lr_find(run.folder, LrFind(res.lrs, res.losses, res.raw_losses, res.suggestion))
        plot_lr_find(res.lrs, res.losses, res.suggestion, run.output(names.LR_FIND_PNG))
        print(f"lr_find: suggested learning rate {res.suggestion:.3g}")
    return res.suggestion if use_suggestion else learn.lr


def _finish(cfg: TrainConfig, learn: Learner, test_dl, run: Run, resumed: bool) -> TrainMetrics:
    test = learn.validate(test_dl)
    history = learn.recorder.history
    rates = [row["samples_per_s"] for row in history if row.get("samples_per_s")]
    train_dl: Any = learn.train_dl  # the training loader, with its data set
    metrics = TrainMetrics(
        test_accuracy=test["accuracy"],
        test_top5=test.get("top5"),
        test_loss=test["valid_loss"],
        epochs=cfg.epochs,
        wall_seconds=round(run.seconds(), 2),
        train_seconds=round(learn.recorder.elapsed, 2),
        samples_per_s=round(statistics.median(rates), 1) if rates else None,
        model=cfg.model,
        data=cfg.data,
        classes=list(learn.class_names or ()),  # (the training set's: never None here)
        train_images=len(train_dl.dataset),
        seed=cfg.seed,
        amp=cfg.amp_dtype if cfg.amp else None,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        train_path=cfg.train_path,  # how the step ran: compile, autocast dtype, memory format
        world_size=learn.world_size,
        resumed=resumed,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    if run.writes:
        learn.save(
            run.output(names.MODEL),
            metrics={"test_accuracy": metrics.test_accuracy, "test_loss": metrics.test_loss},
        )
        plot_history(history, run.output(names.CURVES), title=f"{cfg.model} on {cfg.data}")
        write_metrics(run.folder, metrics)
    return metrics
