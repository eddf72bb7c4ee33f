"""The options of ``reslab train``: one dataclass drives the Python API, the command line
(flags, help, validation) and the config stored with every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reslab.recipes.options import check_options, option

__all__ = ["DEFAULT_LR", "TrainConfig"]

# Peak learning rate when --lr is not given, per optimizer: tuned with one-cycle at batch 256
# on Fashion-MNIST and CIFAR-10 (BENCHMARKS.md, training on the CPU).
DEFAULT_LR = {"sgd": 0.4, "adamw": 3e-3}
SCHEDULES = ("one-cycle", "constant", "step")


@dataclass
class TrainConfig:
    """Options of one training run (the ``reslab train`` flags)."""

    data: str = option(
        None, "fashion-mnist, cifar10, imagenette, or a folder with train/ and val/ class folders"
    )
    out: str = option(None, "run folder to write (new or empty, unless --overwrite)")
    overwrite: bool = option(
        False,
        "replace the run already in --out (its files only)",
        "flag",
        flags=("--overwrite",),
        runtime=True,
    )
    model: str = option("resnet20", "registered model name (see `reslab list`)")
    data_dir: str | None = option(
        None, "where to look for data first (then $RESLAB_DATA, the cache)", "folder", metavar="DIR"
    )
    classes: list[str] | None = option(
        None, "train on these classes only, e.g. airplane,bird", "names", metavar="LIST"
    )
    valid_pct: float = option(
        0.0, "hold out this fraction of train for validation (0: validate on test)", "fraction"
    )
    train_limit: int | None = option(
        None, "train on a fixed random subset of this many images", "positive_int", metavar="N"
    )
    train_eval: int = option(
        0,
        "after every epoch also measure loss and accuracy on a fixed subset of this many "
        "training images, in eval mode without augmentation (the paper's training error)",
        "count",
        metavar="N",
    )
    epochs: int = option(5, "training epochs", "positive_int")
    bs: int = option(256, "batch size per process", "positive_int")
    lr: float | None = option(
        None,
        "(peak) learning rate",
        "positive_float",
        default_text=f"{DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adamw']} for adamw",
    )
    opt: str = option(
        "sgd", "optimizer: SGD with Nesterov momentum, or AdamW", choices=("sgd", "adamw")
    )
    wd: float = option(5e-4, "weight decay (not on norms and biases)", "non_negative_float")
    momentum: float = option(0.9, "SGD momentum (AdamW's beta1); one-cycle cycles it", "fraction")
    beta2: float = option(0.999, "AdamW's beta2 (fastai: 0.99)", "fraction")
    eps: float = option(1e-8, "AdamW's epsilon (fastai: 1e-5)", "positive_float")
    schedule: str = option("one-cycle", "learning-rate schedule", choices=SCHEDULES)
    pct_start: float = option(0.25, "one-cycle warm-up fraction", "fraction")
    div_final: float = option(
        1e4, "one-cycle ends at the starting LR divided by this (fastai: 1e5)", "multiplier"
    )
    milestones: list[int] | None = option(
        None, "epochs where --schedule step divides the LR by 10 (the paper: 82,123)", "epochs"
    )
    warmup_epochs: int = option(
        0, "--schedule step: epochs at a tenth of the LR first (the paper's ResNet-110: 1)", "count"
    )
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", "fraction")
    ema: float | None = option(
        None, "keep an EMA of the weights with this decay, e.g. 0.999", "fraction", metavar="DECAY"
    )
    accum: int = option(1, "gradient accumulation: batches per optimizer step", "positive_int")
    clip: float | None = option(None, "clip the gradient norm to this value", "positive_float")
    amp: bool | None = option(
        None,
        "mixed precision",
        "flag",
        flags=("--amp", "--no-amp"),
        default_text="on where bf16 is native: CUDA, AMX/avx512-bf16 CPUs",
    )
    amp_dtype: str = option(
        "bf16", "mixed-precision type (fp16 adds a GradScaler)", choices=("bf16", "fp16")
    )
    channels_last: bool = option(
        True,
        "NHWC memory format (faster convolutions)",
        "flag",
        flags=("--channels-last", "--no-channels-last"),
    )
    augment: bool = option(
        True, "random crops and flips", "flag", flags=("--augment", "--no-augment")
    )
    width: float | None = option(None, "width multiplier of the model", "positive_float")
    size: int | None = option(
        None,
        "input side in pixels for image folders (random-resized crops of this size)",
        "positive_int",
        default_text="the model's",
    )
    presize: int | None = option(
        None,
        "image folders: bring every image to this square side first (short side resized, "
        "centre crop; fastai's presizing), decoded once and held in memory (cached on disk); "
        "crops and flips then run on whole batches",
        "positive_int",
        default_text="off: decode every epoch",
    )
    cache_images: bool = option(
        True,
        "the decoded-image cache of --presize: decode once, keep in memory and on disk (off: "
        "decode every epoch in worker processes; the same pixels and crops, up to uint8 "
        "rounding)",
        "flag",
        flags=("--cache-images", "--no-cache-images"),
    )
    min_scale: float = option(
        0.35, "image folders: smallest random-resized crop, as a share of the image's area", "share"
    )
    square_crops: bool = option(
        False,
        "random-resized crops of aspect 1:1 (fastai's aug_transforms) instead of 3/4 to 4/3",
        "flag",
        flags=("--square-crops",),
    )
    small_input: str = option(
        "auto",
        "3x3 stride-1 stem for small images (auto: on for in-memory data)",
        choices=("auto", "on", "off"),
    )
    drop_path: float = option(0.0, "stochastic depth rate", "fraction")
    init: str | None = option(
        None,
        "weight initialisation (dirac: every conv starts as an identity)",
        choices=("kaiming", "dirac"),
    )
    workers: int = option(2, "DataLoader workers for image folders", "count", runtime=True)
    seed: int = option(0, "random seed (data order, augmentation, initialisation)", "count")
    save_every: int | None = option(
        None, "also checkpoint every STEPS batches mid-epoch", "positive_int", metavar="STEPS"
    )
    lr_find: bool = option(
        False,
        "run the LR finder first (lr_find.png); without --lr its suggestion is used",
        "flag",
        flags=("--lr-find",),
    )
    sync_bn: bool = option(
        False, "SyncBatchNorm under torchrun (CUDA)", "flag", flags=("--sync-bn",)
    )
    scale_lr: bool = option(
        False,
        "multiply the LR by the number of processes (linear scaling rule)",
        "flag",
        flags=("--scale-lr",),
    )
    loss: str = option("ce", "cross-entropy or negative sampling", choices=("ce", "nce"))
    negatives: int = option(0, "negatives per example for --loss nce", "count", metavar="K")
    device: str | None = option(
        None, "cpu or cuda", "device", default_text="cuda when available", runtime=True
    )
    deterministic: bool = option(
        False,
        "deterministic CUDA kernels (bit-exact resume on GPU; slower)",
        "flag",
        flags=("--deterministic",),
    )
    threads: int | None = option(None, "torch CPU threads", "positive_int", runtime=True)
    progress: bool = option(
        True, "progress bars", "flag", flags=("--progress", "--no-progress"), runtime=True
    )
    tensorboard: bool = option(
        False, "also log to RUN_DIR/tensorboard", "flag", flags=("--tensorboard",)
    )
    skip_bad_images: bool = option(
        False,
        "leave unreadable image files out (counted) instead of stopping",
        "flag",
        flags=("--skip-bad-images",),
    )
    report: bool = option(
        True,
        "the run's report.html, one self-contained page (written by the `reslab train` "
        "command; from Python: reslab.analysis.write_report)",
        "flag",
        flags=("--report", "--no-report"),
        runtime=True,
    )
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self) -> None:
        if self.data is None or self.out is None:
            raise ValueError("--data and --out are required (or --resume RUN_DIR)")
        check_options(self)
        if self.schedule == "step" and not self.milestones:
            raise ValueError("--schedule step needs --milestones, e.g. 82,123")
        if self.warmup_epochs and self.schedule != "step":
            raise ValueError("--warmup-epochs needs --schedule step (one-cycle warms up itself)")
        if self.warmup_epochs and self.warmup_epochs >= self.milestones[0]:
            raise ValueError("--warmup-epochs must end before the first of --milestones")
        if self.loss == "nce" and self.negatives < 1:
            raise ValueError("--loss nce needs --negatives K (K >= 1)")

    @property
    def peak_lr(self) -> float:
        """``lr``, or the optimizer's default."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.opt]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from stored JSON; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
