"""``reslab train`` as a library call: data → model → Learner → fit → test → files.

Everything the command line can do is a :class:`TrainConfig` field, so a run can be started
(and resumed) from Python exactly as from the shell. The config travels inside every
checkpoint, which is how ``reslab train --resume DIR`` rebuilds the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reslab.training.callback import Callback

__all__ = ["TrainConfig", "build_model_for_data", "run_training"]


@dataclass
class TrainConfig:
    """Options of one training run (the ``reslab train`` flags)."""

    data: str
    out: str
    model: str = "resnet20"
    data_dir: str | None = None
    classes: list[str] | None = None
    valid_pct: float = 0.0
    epochs: int = 5
    bs: int = 256
    lr: float | None = None
    opt: str = "sgd"
    wd: float = 5e-4
    momentum: float = 0.9
    schedule: str = "one-cycle"
    pct_start: float = 0.25
    milestones: list[int] | None = None  # epochs where the step schedule divides the LR by 10
    label_smoothing: float = 0.1
    ema: float | None = None
    accum: int = 1
    clip: float | None = None
    amp: bool | None = None  # None: on where bf16 is native (CUDA, AMX/avx512-bf16 CPUs)
    amp_dtype: str = "bf16"
    channels_last: bool = True
    augment: bool = True
    width: float | None = None
    small_input: str = "auto"
    drop_path: float = 0.0
    workers: int = 2
    seed: int = 0
    save_every: int | None = None
    lr_find: bool = False
    sync_bn: bool = False
    scale_lr: bool = False
    loss: str = "ce"
    negatives: int = 0
    device: str | None = None
    deterministic: bool = False  # deterministic kernels (CUDA); else cuDNN autotuning
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = False
    skip_bad_images: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model_for_data(cfg: TrainConfig, train_ds, device: torch.device):
    """The model for this data: class count, input channels, and for in-memory small images
    the data set's own normalisation and (for ImageNet-style nets) the small-input stem."""
    from reslab.api import create_model
    from reslab.data import TensorImageDataset
    from reslab.models import get_model_spec

    spec = get_model_spec(cfg.model)
    overrides: dict[str, Any] = {}
    normalize: Any = True
    in_memory = isinstance(train_ds, TensorImageDataset)
    if in_memory:
        mean, std = train_ds.stats()
        normalize = {"mean": mean, "std": [max(s, 1e-3) for s in std]}
        small = cfg.small_input == "on" or (
            cfg.small_input == "auto" and not spec.arch.get("small_input", False)
        )
        if small and not spec.arch.get("small_input", False):
            overrides["small_input"] = True
    elif cfg.small_input == "on":
        overrides["small_input"] = True
    if cfg.width is not None:
        overrides["width"] = cfg.width
    if cfg.drop_path:
        overrides["drop_path_rate"] = cfg.drop_path
    channels = train_ds.num_channels
    model = create_model(
        cfg.model,
        num_classes=len(train_ds.class_names),
        in_chans=channels,
        normalize=normalize,
        **overrides,
    )
    if in_memory:
        h, w = train_ds.image_size
        model.default_cfg["input_size"] = (channels, h, w)
        model.default_cfg["crop_pct"] = 1.0
    model.default_cfg["class_names"] = list(train_ds.class_names)
    return model.to(device)


def _datasets(cfg: TrainConfig, rank: int):
    from reslab.data import load_dataset

    common = {
        "data_dir": cfg.data_dir,
        "classes": cfg.classes,
        "seed": cfg.seed,
        "on_error": "skip" if cfg.skip_bad_images else "raise",
        "progress": cfg.progress and rank == 0,
    }
    train = load_dataset(cfg.data, "train", valid_pct=cfg.valid_pct, **common)
    test = load_dataset(cfg.data, "test", **common)
    valid = (
        load_dataset(cfg.data, "valid", valid_pct=cfg.valid_pct, **common)
        if (cfg.valid_pct > 0)
        else test
    )
    return train, valid, test


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here (native bf16 math, not emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _callbacks(cfg: TrainConfig, out: Path, train_ds) -> list[Callback]:
    from reslab.training.checkpoint import SaveCheckpoint
    from reslab.training.loggers import CSVLogger, TensorBoardCallback
    from reslab.training.tricks import (
        EMA,
        ChannelsLast,
        GradientAccumulation,
        GradientClip,
        MixedPrecision,
    )

    cbs: list[Callback] = []
    if cfg.loss == "nce":
        from reslab.training.losses import NegativeSamplingCallback

        counts = torch.bincount(train_ds.labels, minlength=len(train_ds.class_names))
        cbs.append(NegativeSamplingCallback(cfg.negatives, "uniform", class_counts=counts))
    elif cfg.loss != "ce":
        raise ValueError(f"unknown loss {cfg.loss!r}; expected ce or nce")
    if cfg.amp:
        cbs.append(MixedPrecision(cfg.amp_dtype))
    if cfg.channels_last:
        cbs.append(ChannelsLast())
    if cfg.accum > 1:
        cbs.append(GradientAccumulation(cfg.accum))
    if cfg.clip:
        cbs.append(GradientClip(cfg.clip))
    if cfg.ema:
        cbs.append(EMA(cfg.ema))
    cbs.append(CSVLogger(out))
    if cfg.tensorboard:
        cbs.append(TensorBoardCallback(out / "tensorboard"))
    extra = {"train_config": dataclasses.asdict(cfg)}
    cbs.append(SaveCheckpoint(out, every_n_steps=cfg.save_every, extra=extra))
    return cbs


def _check(cfg: TrainConfig) -> None:
    if cfg.epochs < 1 or cfg.bs < 1 or cfg.accum < 1:
        raise ValueError("--epochs, --bs and --accum must be positive")
    if cfg.schedule not in ("one-cycle", "constant", "step"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; expected one-cycle, constant, step")
    if cfg.schedule == "step" and not cfg.milestones:
        raise ValueError("--schedule step needs --milestones, e.g. 82,123")
    if not 0.0 <= cfg.valid_pct < 1.0:
        raise ValueError(f"--valid-pct must be in [0, 1), got {cfg.valid_pct}")
    if cfg.loss == "nce" and cfg.negatives < 1:
        raise ValueError("--loss nce needs --negatives K (K >= 1)")


def _set_kernel_policy(deterministic: bool, device: torch.device) -> None:
    """cuDNN autotuning (fixed input sizes: pick the fastest kernels) unless reproducibility
    was asked for; then deterministic kernels only (CPU kernels are deterministic already)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def run_training(
    cfg: TrainConfig, *, resume: bool = False, extra_cbs: tuple[Callback, ...] = ()
) -> dict[str, Any]:
    """Train as configured, write the run folder, return the final metrics.

    Files in ``cfg.out``: ``model.safetensors`` (final weights, class names, metrics),
    ``checkpoint.safetensors`` + its state file (resume point), ``history.csv``/``.json``,
    ``curves.png``, ``metrics.json``, ``config.json`` and, with ``lr_find``,
    ``lr_find.json``/``.png``.
    """
    from reslab.data import make_loader
    from reslab.training.distributed import convert_sync_batchnorm, init_distributed
    from reslab.training.learner import Learner

    t0 = time.perf_counter()
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx = init_distributed(cfg.device)
    if cfg.amp is None:
        cfg = dataclasses.replace(cfg, amp=bf16_is_fast(ctx.device))
    out = Path(cfg.out)
    _seed_everything(cfg.seed)
    _set_kernel_policy(cfg.deterministic, ctx.device)
    train_ds, valid_ds, test_ds = _datasets(cfg, ctx.rank)
    model = build_model_for_data(cfg, train_ds, ctx.device)
    if cfg.sync_bn and ctx.world_size > 1:
        model = convert_sync_batchnorm(model, ctx.device)

    def loader(ds, train: bool):
        return make_loader(
            ds,
            cfg.bs,
            train=train,
            device=ctx.device,
            seed=cfg.seed,
            workers=cfg.workers,
            model_cfg=model.default_cfg,
            augment=cfg.augment,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

    train_dl, valid_dl = loader(train_ds, True), loader(valid_ds, False)
    # Defaults tuned with one-cycle at batch 256 (benchmarks/results/training.md).
    lr = cfg.lr if cfg.lr is not None else (0.4 if cfg.opt == "sgd" else 3e-3)
    if cfg.scale_lr:
        lr *= ctx.world_size  # linear scaling: the global batch grew N-fold
    loss_func = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    learn = Learner(
        model,
        train_dl,
        valid_dl,
        loss_func=loss_func,
        metrics=("accuracy", "top5"),
        opt=cfg.opt,
        lr=lr,
        wd=cfg.wd,
        momentum=cfg.momentum,
        device=ctx.device,
        class_names=train_ds.class_names,
        progress=cfg.progress,
        cbs=[*_callbacks(cfg, out, train_ds), *extra_cbs],
    )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    if resume:
        learn.resume(out)
    elif cfg.lr_find:
        lr = _run_lr_find(learn, out, ctx.is_main, cfg.lr is None)
        learn.lr = lr
    if cfg.schedule == "one-cycle":
        learn.fit_one_cycle(cfg.epochs, learn.lr, pct_start=cfg.pct_start)
    elif cfg.schedule == "step":
        from reslab.training.schedule import StepSchedule

        learn.fit(cfg.epochs, learn.lr, cbs=[StepSchedule(learn.lr, tuple(cfg.milestones))])
    else:
        learn.fit(cfg.epochs, learn.lr)
    return _finish(cfg, learn, loader(test_ds, False), out, t0, resume)


def _run_lr_find(learn, out: Path, is_main: bool, use_suggestion: bool) -> float:
    from reslab.training.lr_find import lr_find
    from reslab.training.plots import plot_lr_find

    res = lr_find(learn)
    if is_main:
        (out / "lr_find.json").write_text(json.dumps(res.to_dict()))
        plot_lr_find(res.lrs, res.losses, res.suggestion, out / "lr_find.png")
        print(f"lr_find: suggested learning rate {res.suggestion:.3g}")
    return res.suggestion if use_suggestion else learn.lr


def _finish(cfg: TrainConfig, learn, test_dl, out: Path, t0: float, resumed: bool) -> dict:
    from reslab.training.plots import plot_history

    test = learn.validate(test_dl)
    history = learn.recorder.history
    rates = [row["samples_per_s"] for row in history if row.get("samples_per_s")]
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_top5": test.get("top5"),
        "test_loss": test["valid_loss"],
        "epochs": cfg.epochs,
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "train_seconds": round(learn.recorder.elapsed, 2),
        "samples_per_s": round(statistics.median(rates), 1) if rates else None,
        "model": cfg.model,
        "data": cfg.data,
        "classes": learn.class_names,
        "seed": cfg.seed,
        "amp": cfg.amp_dtype if cfg.amp else None,
        "channels_last": cfg.channels_last,
        "world_size": learn.world_size,
        "resumed": resumed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if learn.is_main:
        from reslab.training.checkpoint import save_learner

        save_learner(
            learn,
            out / "model.safetensors",
            with_state=False,
            metrics={k: metrics[k] for k in ("test_accuracy", "test_loss")},
        )
        plot_history(history, out / "curves.png", title=f"{cfg.model} on {cfg.data}")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
