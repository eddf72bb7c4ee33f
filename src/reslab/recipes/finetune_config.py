"""The options of ``reslab finetune``: one dataclass for the Python API, the command line and
the config stored with the run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from reslab.recipes.options import check_options, option

__all__ = ["DEFAULT_FINETUNE_LR", "FinetuneConfig"]

# Peak learning rate when --lr is not given (fastai's fine_tune default is 2e-3 for Adam).
DEFAULT_FINETUNE_LR = {"adamw": 1e-3, "sgd": 0.01}


@dataclass
class FinetuneConfig:
    """Options of one fine-tuning run (the ``reslab finetune`` flags)."""

    source: str = option(None, "the pretrained model", flags=("--from",), metavar="MODEL@TAG|CKPT")
    data: str = option(None, "fashion-mnist, cifar10, imagenette or a folder with train/ and val/")
    out: str | None = option(
        None, "run folder to write (model.safetensors, metrics.json, history.json)"
    )
    overwrite: bool = option(
        False, "replace the run already in --out (its files only)", "flag", flags=("--overwrite",)
    )
    freeze: str = option(
        "backbone", "what stays frozen: backbone, none, or stages:N (stem + first N stages)"
    )
    epochs: int = option(
        3, "training epochs (after --freeze-epochs with --schedule fine-tune)", "count"
    )
    bs: int = option(64, "batch size", "positive_int")
    lr: float | None = option(
        None,
        "(peak) learning rate",
        "positive_float",
        default_text=f"{DEFAULT_FINETUNE_LR['adamw']} adamw, {DEFAULT_FINETUNE_LR['sgd']} sgd",
    )
    opt: str = option("adamw", "optimizer", choices=("sgd", "adamw"))
    wd: float = option(1e-4, "weight decay (not on norms and biases)", "non_negative_float")
    momentum: float = option(0.9, "SGD momentum (AdamW's beta1); 0 turns momentum off", "fraction")
    schedule: str = option(
        "one-cycle",
        "one-cycle, constant, or fine-tune: --freeze-epochs frozen, then --epochs "
        "unfrozen (fastai)",
        choices=("one-cycle", "constant", "fine-tune"),
    )
    freeze_epochs: int = option(1, "frozen epochs first, with --schedule fine-tune", "count")
    lr_mult: float = option(1.0, "discriminative LRs: head LR / stem LR, e.g. 100", "multiplier")
    size: int | None = option(
        None, "input side in pixels", "positive_int", default_text="the model's"
    )
    gray: str = option(
        "repeat",
        "grey data: repeat to 3 channels, or sum conv1 to one channel",
        choices=("repeat", "conv1"),
    )
    cache_features: str | None = option(
        None,
        "embed images once with the frozen backbone (in memory, or files in DIR)",
        metavar="DIR",
        const="memory",
    )
    flip: bool = option(
        False,
        "with --cache-features: also embed mirror images (augment, TTA average)",
        "flag",
        flags=("--flip-tta",),
    )
    augment: bool = option(
        True, "random crops and flips", "flag", flags=("--augment", "--no-augment")
    )
    classes: list[str] | None = option(None, "train on these classes only", "names", metavar="LIST")
    valid_pct: float = option(0.0, "hold out this fraction of train for validation", "fraction")
    train_limit: int | None = option(
        None, "use a random subset of this many train images", "positive_int"
    )
    valid_limit: int | None = option(None, "… and of this many validation images", "positive_int")
    data_dir: str | None = option(None, "where to look for data first", "folder", metavar="DIR")
    workers: int = option(2, "DataLoader workers for image folders", "count", runtime=True)
    save_every: int | None = option(
        None, "also checkpoint every STEPS batches (each epoch always)", "positive_int",
        metavar="STEPS",
    )  # fmt: skip
    seed: int = option(0, "random seed", "count")
    device: str | None = option(
        None, "cpu or cuda", "device", default_text="cuda when available", runtime=True
    )
    threads: int | None = option(None, "torch CPU threads", "positive_int", runtime=True)
    progress: bool = option(
        True, "progress bars", "flag", flags=("--progress", "--no-progress"), runtime=True
    )

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
