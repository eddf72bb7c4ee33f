"""Options that several commands take, declared once: flag, kind (type and validation), help,
``--help`` section and whether a resume may change it.

A recipe's config uses one as a field (``data_dir: str | None = option(None, DATA_DIR)``); a
command without a config adds it to its parser (``reslab.cli.options.add_shared``). Either
way the flag, its type, its help text and its one-line error are the same in every command;
only the default is the command's own (and, with ``default_text``, how ``--help`` shows it).
"""

from __future__ import annotations

from typing import Any

from reslab.recipes.options import OptionSpec

__all__ = [
    "AMP",
    "ARMS",
    "AUGMENT",
    "BS",
    "CLASSES",
    "DATA",
    "DATA_DIR",
    "DEPTHS",
    "DEVICE",
    "EXPERIMENT_OUT",
    "LABEL_SMOOTHING",
    "LR",
    "LR_FIND",
    "MILESTONES",
    "MOMENTUM",
    "OPT",
    "OUT_DIR",
    "OUT_FILE",
    "OVERWRITE",
    "PROGRESS",
    "REPORT",
    "RESUME",
    "RUN_OUT",
    "SAVE_EVERY",
    "SEED",
    "SEEDS",
    "SHARED_OPTIONS",
    "SKIP_BAD_IMAGES",
    "THREADS",
    "TRAIN_EVAL",
    "TRAIN_LIMIT",
    "VALID_PCT",
    "WARMUP_EPOCHS",
    "WD",
    "WIDTH",
    "WORKERS",
    "shared_option",
]

SHARED_OPTIONS: dict[str, OptionSpec] = {}


def shared_option(
    name: str, flags: tuple[str, ...], help: str, kind: str = "str", **spec: Any
) -> OptionSpec:
    """Declare the shared option ``name`` (see :class:`~reslab.recipes.options.OptionSpec`)."""
    if name in SHARED_OPTIONS:
        raise ValueError(f"shared option {name!r} is declared twice")
    declared = OptionSpec(help=help, kind=kind, flags=flags, shared=name, **spec)
    SHARED_OPTIONS[name] = declared
    return declared


# experiment: which networks (the degradation lab's families and depths)
ARMS = shared_option(
    "arms",
    ("--arms",),
    "network families: plain, residual, plain-dirac (the plain net with identity init)",
    "names",
    metavar="LIST",
    group="experiment",
)
DEPTHS = shared_option(
    "depths", ("--depths",), "network depths (6n+2: 20, 32, 44, 56, 110)", "ints",
    group="experiment",
)  # fmt: skip
SEEDS = shared_option(
    "seeds", ("--seeds",), "seeds per network (0, 1, …); results give mean ± std",
    "positive_int", group="experiment",
)  # fmt: skip

# data
DATA = shared_option(
    "data",
    ("--data",),
    "data set: fashion-mnist, cifar10, imagenette, or a folder with train/ and val/ (or test/) "
    "class folders",
    group="data",
)
DATA_DIR = shared_option(
    "data_dir",
    ("--data-dir",),
    "where to look for a named data set first (then $RESLAB_DATA, then reslab's cache)",
    "folder",
    metavar="DIR",
    group="data",
)
CLASSES = shared_option(
    "classes",
    ("--classes",),
    "use only these classes, relabelled in the order given, e.g. airplane,bird",
    "names",
    metavar="LIST",
    group="data",
)
VALID_PCT = shared_option(
    "valid_pct",
    ("--valid-pct",),
    "hold out this fraction of train for validation (0: validate on test)",
    "fraction",
    group="data",
)
TRAIN_LIMIT = shared_option(
    "train_limit",
    ("--train-limit",),
    "train on a fixed random subset of this many images",
    "positive_int",
    group="data",
)
TRAIN_EVAL = shared_option(
    "train_eval",
    ("--train-eval",),
    "after every epoch also measure loss and accuracy on a fixed subset of this many "
    "training images, in eval mode without augmentation (the paper's training error)",
    "count",
    group="data",
)
AUGMENT = shared_option(
    "augment", ("--augment", "--no-augment"), "random crops and flips", "flag", group="data"
)
SKIP_BAD_IMAGES = shared_option(
    "skip_bad_images",
    ("--skip-bad-images",),
    "leave unreadable image files out (counted) instead of stopping",
    "flag",
    group="data",
)

# optimisation
LR_FIND = shared_option(
    "lr_find",
    ("--lr-find", "--no-lr-find"),
    "run the LR finder first (lr_find.png); without --lr its suggestion is used",
    "flag",
    group="optimisation",
)
BS = shared_option("bs", ("--bs",), "batch size", "positive_int", group="optimisation")
LR = shared_option("lr", ("--lr",), "(peak) learning rate", "positive_float", group="optimisation")
OPT = shared_option(
    "opt",
    ("--opt",),
    "optimizer: SGD with Nesterov momentum, or AdamW",
    choices=("sgd", "adamw"),
    group="optimisation",
)
WD = shared_option(
    "wd",
    ("--wd",),
    "weight decay (not on norms and biases)",
    "non_negative_float",
    group="optimisation",
)
MOMENTUM = shared_option(
    "momentum",
    ("--momentum",),
    "SGD momentum (AdamW's beta1; 0: none); one-cycle cycles it",
    "fraction",
    group="optimisation",
)
MILESTONES = shared_option(
    "milestones",
    ("--milestones",),
    "epochs where --schedule step divides the LR by 10 (the paper: 82,123)",
    "epochs",
    group="optimisation",
)
WARMUP_EPOCHS = shared_option(
    "warmup_epochs",
    ("--warmup-epochs",),
    "--schedule step: epochs at a tenth of the LR first (the paper's ResNet-110: 1)",
    "count",
    group="optimisation",
)
LABEL_SMOOTHING = shared_option(
    "label_smoothing",
    ("--label-smoothing",),
    "label smoothing of the cross-entropy",
    "fraction",
    group="optimisation",
)
SEED = shared_option(
    "seed",
    ("--seed",),
    "random seed (data order, augmentation, initialisation, subsets)",
    "count",
    group="optimisation",
)

# precision
AMP = shared_option("amp", ("--amp", "--no-amp"), "mixed precision", "flag", group="precision")

# output: a run folder, an experiment folder, a file, a folder
RUN_OUT = shared_option(
    "run_out",
    ("--out",),
    "run folder to write (new or empty, unless --overwrite)",
    metavar="RUN_DIR",
    group="run",
)
OVERWRITE = shared_option(
    "overwrite",
    ("--overwrite",),
    "replace the run already in --out (its files only)",
    "flag",
    runtime=True,
    group="run",
)
RESUME = shared_option(
    "resume",
    ("--resume",),
    "continue the run saved in RUN_DIR exactly",
    metavar="RUN_DIR",
    group="run",
)
SAVE_EVERY = shared_option(
    "save_every",
    ("--save-every",),
    "also checkpoint every STEPS batches mid-epoch (after every epoch always)",
    "positive_int",
    metavar="STEPS",
    group="run",
)
REPORT = shared_option(
    "report",
    ("--report", "--no-report"),
    "the report.html page at the end (one self-contained file; from Python: "
    "reslab.analysis.write_report)",
    "flag",
    runtime=True,
    group="run",
)
EXPERIMENT_OUT = shared_option(
    "experiment_out",
    ("--out",),
    "the experiment folder (runs/, results, figures); the same command again resumes it",
    metavar="DIR",
    group="run",
)
OUT_FILE = shared_option(
    "out_file",
    ("--out",),
    "file to write (never one of the command's inputs, nor a device or FIFO)",
    metavar="FILE",
)
OUT_DIR = shared_option(
    "out_dir", ("--out",), "folder to write the files into (made if missing)", metavar="DIR"
)

WIDTH = shared_option(
    "width", ("--width",), "width multiplier of the model", "positive_float", group="model"
)

# runtime
DEVICE = shared_option(
    "device", ("--device",), "cpu, cuda or cuda:N", "device", runtime=True, group="runtime"
)
THREADS = shared_option(
    "threads", ("--threads",), "torch CPU threads", "positive_int", runtime=True, group="runtime"
)
WORKERS = shared_option(
    "workers",
    ("--workers",),
    "DataLoader processes decoding image folders (0: decode in the main process)",
    "count",
    runtime=True,
    group="runtime",
)
PROGRESS = shared_option(
    "progress",
    ("--progress", "--no-progress"),
    "progress bars",
    "flag",
    runtime=True,
    group="runtime",
)
