"""The options of ``reslab train``: one dataclass drives the Python API, the command line
(flags, help, validation) and the config stored with every run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reslab.recipes.options import check_options, option
from reslab.recipes.shared_options import (
    AMP,
    AUGMENT,
    BS,
    CLASSES,
    DATA,
    DATA_DIR,
    DEVICE,
    LABEL_SMOOTHING,
    LR,
    LR_FIND,
    MILESTONES,
    MOMENTUM,
    OPT,
    OVERWRITE,
    PROGRESS,
    REPORT,
    RUN_OUT,
    SAVE_EVERY,
    SEED,
    SKIP_BAD_IMAGES,
    THREADS,
    TRAIN_EVAL,
    TRAIN_LIMIT,
    VALID_PCT,
    WARMUP_EPOCHS,
    WD,
    WIDTH,
    WORKERS,
)

__all__ = ["DEFAULT_LR", "TRAIN_RECIPES", "TrainConfig", "TrainRecipe", "train_path_name"]

# Peak learning rate when --lr is not given, per optimizer: tuned with one-cycle at batch 256
# on Fashion-MNIST and CIFAR-10 (BENCHMARKS.md, training on the CPU).
DEFAULT_LR = {"sgd": 0.4, "adamw": 3e-3}
SCHEDULES = ("one-cycle", "constant", "step")


@dataclass(frozen=True)
class TrainRecipe:
    """A named set of ``reslab train`` options (``--recipe NAME``), with what it is for."""

    summary: str
    options: dict[str, Any]
    target: float | None = None  # test accuracy it is meant to reach
    budget_s: float | None = None  # in this many seconds of wall clock (BENCHMARKS.md's machine)


# Named recipes: `reslab train --recipe NAME` (options given on the command line win), and what
# benchmarks/train_recipes.py measures. Times are wall clock on the 2-core development VM
# (Intel with AMX, bf16 autocast), data loading and evaluation included.
TRAIN_RECIPES: dict[str, TrainRecipe] = {
    "fmnist-fast": TrainRecipe(
        "Fashion-MNIST to 93 % test accuracy in 5 minutes on 2 cores with native bf16",
        {
            "data": "fashion-mnist",
            "model": "resnet20",
            "epochs": 8,
            "bs": 256,
            "lr": 0.4,  # one-cycle peak
            "label_smoothing": 0.1,
            "compile": True,
        },
        target=0.93,
        budget_s=300,
    ),
    "fmnist-600s": TrainRecipe(
        "Fashion-MNIST to 93 % in 10 minutes (eager)",
        {
            "data": "fashion-mnist",
            "model": "resnet20",
            "epochs": 10,
            "bs": 256,
            "lr": 0.4,
            "label_smoothing": 0.1,
        },
        target=0.93,
        budget_s=600,
    ),
    "fmnist-long": TrainRecipe(
        "Fashion-MNIST to 94 %, 30 epochs",
        {
            "data": "fashion-mnist",
            "model": "resnet20",
            "epochs": 30,
            "bs": 256,
            "lr": 0.4,
            "label_smoothing": 0.1,
        },
        target=0.94,
    ),
}


def train_path_name(compile: bool, amp: str | None, channels_last: bool) -> str:
    """``compile+bf16+channels-last``-style name of a way to run the training step."""
    parts = ["compile"] if compile else []
    parts += [amp] if amp else []
    parts += ["channels-last"] if channels_last else []
    return "+".join(parts) or "eager"


@dataclass
class TrainConfig:
    """Options of one training run (the ``reslab train`` flags)."""

    data: str = option(None, DATA)
    out: str = option(None, RUN_OUT)
    overwrite: bool = option(False, OVERWRITE)
    recipe: str | None = option(
        None,
        "start from a named recipe: its options, unless given on the command line "
        "(" + "; ".join(f"{name}: {r.summary}" for name, r in TRAIN_RECIPES.items()) + ")",
        choices=tuple(TRAIN_RECIPES),
        group="optimisation",
    )
    model: str = option("resnet20", "registered model name (see `reslab list`)", group="model")
    data_dir: str | None = option(None, DATA_DIR)
    classes: list[str] | None = option(None, CLASSES)
    valid_pct: float = option(0.0, VALID_PCT)
    train_limit: int | None = option(None, TRAIN_LIMIT)
    train_eval: int = option(0, TRAIN_EVAL)
    epochs: int = option(5, "training epochs", "positive_int", group="optimisation")
    bs: int = option(256, BS)
    lr: float | None = option(
        None, LR, default_text=f"{DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adamw']} for adamw"
    )
    opt: str = option("sgd", OPT)
    wd: float = option(5e-4, WD)
    momentum: float = option(0.9, MOMENTUM)
    schedule: str = option(
        "one-cycle", "learning-rate schedule", choices=SCHEDULES, group="optimisation"
    )
    pct_start: float = option(0.25, "one-cycle warm-up fraction", "fraction", group="optimisation")
    milestones: list[int] | None = option(None, MILESTONES)
    warmup_epochs: int = option(0, WARMUP_EPOCHS)
    label_smoothing: float = option(0.1, LABEL_SMOOTHING)
    beta2: float = option(0.999, "AdamW's beta2 (fastai: 0.99)", "fraction", group="optimisation")
    eps: float = option(
        1e-8, "AdamW's epsilon (fastai: 1e-5)", "positive_float", group="optimisation"
    )
    div_final: float = option(
        1e4,
        "one-cycle ends at the starting LR divided by this (fastai: 1e5)",
        "multiplier",
        group="optimisation",
    )
    ema: float | None = option(
        None,
        "keep an EMA of the weights with this decay, e.g. 0.999",
        "fraction",
        metavar="DECAY",
        group="optimisation",
    )
    accum: int = option(
        1,
        "gradient accumulation: batches per optimizer step",
        "positive_int",
        group="optimisation",
    )
    clip: float | None = option(
        None, "clip the gradient norm to this value", "positive_float", group="optimisation"
    )
    amp: bool | None = option(
        None, AMP, default_text="on where bf16 is native: CUDA, AMX/avx512-bf16 CPUs"
    )
    amp_dtype: str = option(
        "bf16",
        "mixed-precision type (fp16 adds a GradScaler)",
        choices=("bf16", "fp16"),
        group="precision",
    )
    channels_last: bool = option(
        True,
        "NHWC memory format (faster convolutions)",
        "flag",
        flags=("--channels-last", "--no-channels-last"),
        group="precision",
    )
    compile: bool = option(
        False,
        "torch.compile the training step (forward and backward; the first batches compile)",
        "flag",
        flags=("--compile", "--no-compile"),
        runtime=True,
        group="runtime",
    )
    augment: bool = option(True, AUGMENT)
    width: float | None = option(None, WIDTH)
    size: int | None = option(
        None,
        "input side in pixels for image folders (random-resized crops of this size)",
        "positive_int",
        default_text="the model's",
        group="data",
    )
    presize: int | None = option(
        None,
        "image folders: bring every image to this square side first (short side resized, "
        "centre crop; fastai's presizing), decoded once and held in memory (cached on disk); "
        "crops and flips then run on whole batches",
        "positive_int",
        default_text="off: decode every epoch",
        group="data",
    )
    cache_images: bool = option(
        True,
        "the decoded-image cache of --presize: decode once, keep in memory and on disk (off: "
        "decode every epoch in worker processes; the same pixels and crops, up to uint8 "
        "rounding)",
        "flag",
        flags=("--cache-images", "--no-cache-images"),
        group="data",
    )
    min_scale: float = option(
        0.35,
        "image folders: smallest random-resized crop, as a share of the image's area",
        "share",
        group="data",
    )
    square_crops: bool = option(
        False,
        "random-resized crops of aspect 1:1 (fastai's aug_transforms) instead of 3/4 to 4/3",
        "flag",
        flags=("--square-crops",),
        group="data",
    )
    small_input: str = option(
        "auto",
        "3x3 stride-1 stem for small images (auto: on for in-memory data)",
        choices=("auto", "on", "off"),
        group="model",
    )
    drop_path: float = option(0.0, "stochastic depth rate", "fraction", group="model")
    init: str | None = option(
        None,
        "weight initialisation (dirac: every conv starts as an identity)",
        choices=("kaiming", "dirac"),
        group="model",
    )
    workers: int = option(2, WORKERS)
    seed: int = option(0, SEED)
    save_every: int | None = option(None, SAVE_EVERY)
    lr_find: bool = option(False, LR_FIND)
    sync_bn: bool = option(
        False,
        "SyncBatchNorm under torchrun (CUDA)",
        "flag",
        flags=("--sync-bn",),
        group="optimisation",
    )
    scale_lr: bool = option(
        False,
        "multiply the LR by the number of processes (linear scaling rule)",
        "flag",
        flags=("--scale-lr",),
        group="optimisation",
    )
    loss: str = option(
        "ce", "cross-entropy or negative sampling", choices=("ce", "nce"), group="optimisation"
    )
    negatives: int = option(
        0, "negatives per example for --loss nce", "count", metavar="K", group="optimisation"
    )
    device: str | None = option(None, DEVICE, default_text="cuda when available")
    deterministic: bool = option(
        False,
        "deterministic CUDA kernels (bit-exact resume on GPU; slower)",
        "flag",
        flags=("--deterministic",),
        group="precision",
    )
    threads: int | None = option(None, THREADS, default_text="torch's")
    progress: bool = option(True, PROGRESS)
    tensorboard: bool = option(
        False, "also log to RUN_DIR/tensorboard", "flag", flags=("--tensorboard",), group="run"
    )
    skip_bad_images: bool = option(False, SKIP_BAD_IMAGES)
    report: bool = option(True, REPORT)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def __post_init__(self) -> None:
        if self.data is None or self.out is None:
            raise ValueError(
                "--data and --out are required (--recipe NAME gives --data; or --resume RUN_DIR)"
            )
        check_options(self)
        if self.schedule == "step" and not self.milestones:
            raise ValueError("--schedule step needs --milestones, e.g. 82,123")
        if self.warmup_epochs and self.schedule != "step":
            raise ValueError("--warmup-epochs needs --schedule step (one-cycle warms up itself)")
        if self.warmup_epochs and self.milestones and self.warmup_epochs >= self.milestones[0]:
            raise ValueError("--warmup-epochs must end before the first of --milestones")
        if self.loss == "nce" and self.negatives < 1:
            raise ValueError("--loss nce needs --negatives K (K >= 1)")

    @classmethod
    def from_options(cls, given: dict[str, Any]) -> TrainConfig:
        """A config from the options given (command-line style): with ``recipe``, the named
        recipe's options first, then ``given`` over them."""
        name = given.get("recipe")
        if name is not None and name not in TRAIN_RECIPES:
            raise ValueError(
                f"--recipe: unknown {name!r}; expected one of {', '.join(TRAIN_RECIPES)}"
            )
        base = dict(TRAIN_RECIPES[name].options) if name else {}
        return cls(**{**base, **given})

    @property
    def train_path(self) -> str:
        """How the training step runs, e.g. ``compile+bf16+channels-last`` (``eager``: plain
        fp32 NCHW); ``amp`` must be resolved (not ``None``)."""
        return train_path_name(
            self.compile, self.amp_dtype if self.amp else None, self.channels_last
        )

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
