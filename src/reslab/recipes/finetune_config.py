"""The options of ``reslab finetune``: one dataclass for the Python API, the command line and
the config stored with the run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from reslab.recipes.options import check_options, option
from reslab.recipes.shared_options import (
    AUGMENT,
    BS,
    CLASSES,
    DATA,
    DATA_DIR,
    DEVICE,
    LR,
    MOMENTUM,
    OPT,
    OVERWRITE,
    PROGRESS,
    RUN_OUT,
    SAVE_EVERY,
    SEED,
    THREADS,
    TRAIN_LIMIT,
    VALID_PCT,
    WD,
    WORKERS,
)

__all__ = ["DEFAULT_FINETUNE_LR", "FinetuneConfig"]

# Peak learning rate when --lr is not given (fastai's fine_tune default is 2e-3 for Adam).
DEFAULT_FINETUNE_LR = {"adamw": 1e-3, "sgd": 0.01}


@dataclass
class FinetuneConfig:
    """Options of one fine-tuning run (the ``reslab finetune`` flags)."""

    source: str = option(
        None, "the pretrained model", flags=("--from",), metavar="MODEL@TAG|CKPT", group="model"
    )
    data: str = option(None, DATA)
    out: str | None = option(None, RUN_OUT, default_text="none: nothing is written")
    overwrite: bool = option(False, OVERWRITE)
    freeze: str = option(
        "backbone",
        "what stays frozen: backbone, none, or stages:N (stem + first N stages)",
        group="model",
    )
    epochs: int = option(
        3,
        "training epochs (after --freeze-epochs with --schedule fine-tune)",
        "count",
        group="optimisation",
    )
    bs: int = option(64, BS)
    lr: float | None = option(
        None,
        LR,
        default_text=f"{DEFAULT_FINETUNE_LR['adamw']} adamw, {DEFAULT_FINETUNE_LR['sgd']} sgd",
    )
    opt: str = option("adamw", OPT)
    wd: float = option(1e-4, WD)
    momentum: float = option(0.9, MOMENTUM)
    schedule: str = option(
        "one-cycle",
        "one-cycle, constant, or fine-tune: --freeze-epochs frozen, then --epochs "
        "unfrozen (fastai)",
        choices=("one-cycle", "constant", "fine-tune"),
        group="optimisation",
    )
    freeze_epochs: int = option(
        1, "frozen epochs first, with --schedule fine-tune", "count", group="optimisation"
    )
    lr_mult: float = option(
        1.0, "discriminative LRs: head LR / stem LR, e.g. 100", "multiplier", group="optimisation"
    )
    size: int | None = option(
        None, "input side in pixels", "positive_int", default_text="the model's", group="data"
    )
    gray: str = option(
        "repeat",
        "grey data: repeat to 3 channels, or sum conv1 to one channel",
        choices=("repeat", "conv1"),
        group="model",
    )
    cache_features: str | None = option(
        None,
        "embed images once with the frozen backbone (in memory, or files in DIR)",
        metavar="DIR",
        const="memory",
        group="data",
    )
    flip: bool = option(
        False,
        "with --cache-features: also embed mirror images (augment, TTA average)",
        "flag",
        flags=("--flip-tta",),
        group="data",
    )
    augment: bool = option(True, AUGMENT)
    classes: list[str] | None = option(None, CLASSES)
    valid_pct: float = option(0.0, VALID_PCT)
    train_limit: int | None = option(None, TRAIN_LIMIT)
    valid_limit: int | None = option(
        None,
        "validate on a fixed random subset of this many images",
        "positive_int",
        group="data",
    )
    data_dir: str | None = option(None, DATA_DIR)
    workers: int = option(2, WORKERS)
    save_every: int | None = option(None, SAVE_EVERY)
    seed: int = option(0, SEED)
    device: str | None = option(None, DEVICE, default_text="cuda when available")
    threads: int | None = option(None, THREADS, default_text="torch's")
    progress: bool = option(True, PROGRESS)

    def __post_init__(self) -> None:
        if self.source is None or self.data is None:
            raise ValueError("--from and --data are required (or --resume RUN_DIR)")
        check_options(self)
        if self.cache_features and self.freeze != "backbone":
            raise ValueError("--cache-features needs --freeze backbone (fixed embeddings)")
        if self.cache_features and self.schedule == "fine-tune":
            raise ValueError(
                "--cache-features trains the head only; it cannot --schedule fine-tune"
            )
        if self.flip and not self.cache_features:
            raise ValueError("--flip-tta applies to --cache-features")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_FINETUNE_LR[self.opt]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """A config from stored JSON; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
