"""The degradation experiment of the residual-network paper (He et al. 2015, Fig. 1 and 6): a
deeper *plain* network has a higher *training* error than a shallower one, while with identity
shortcuts the deeper network is the better one.

``run_degradation`` trains every (arm, depth, seed) with one recipe as ordinary run folders
(:mod:`reslab.recipes.experiment`), measuring after every epoch the clean training error (eval
mode, no augmentation, a fixed subset of the training images — the quantity the paper plots),
the running training error and the test error, then writes ``results.json``, ``results.md``
and ``degradation.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reslab.models import list_models
from reslab.recipes.degradation_results import FIGURE, collect_results, write_results
from reslab.recipes.experiment import ExperimentRun, open_experiment, train_runs
from reslab.recipes.options import check_options, option
from reslab.recipes.shared_options import (
    AMP,
    BS,
    DATA,
    DATA_DIR,
    DEPTHS,
    DEVICE,
    EXPERIMENT_OUT,
    LABEL_SMOOTHING,
    LR,
    MILESTONES,
    MOMENTUM,
    PROGRESS,
    REPORT,
    SEEDS,
    THREADS,
    TRAIN_EVAL,
    TRAIN_LIMIT,
    WARMUP_EPOCHS,
    WD,
)
from reslab.recipes.shared_options import ARMS as ARMS_OPTION
from reslab.recipes.train_config import TrainConfig
from reslab.runs import names, write_manifest

__all__ = ["ARMS", "BUDGETS", "DegradationConfig", "degradation_runs", "run_degradation"]

# An arm is a family of networks: the registered name for a depth, and build options.
# arm -> (model name template, TrainConfig options of the arm)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain{depth}", {}),
    "residual": ("resnet{depth}", {}),
    "plain-dirac": ("plain{depth}", {"init": "dirac"}),
}
# Named training budgets (CIFAR-10). Explicit options override them. "paper" is He et al.'s
# protocol: 164 epochs of the 50k training images at batch 128, LR 0.1 divided by 10 at epochs
# 82 and 123, weight decay 1e-4, momentum 0.9, float32, and for the nets of WARMUP_MIN_DEPTH
# layers or more one epoch at LR 0.01 first.
BUDGETS: dict[str, dict[str, Any]] = {
    "short": {
        "train_limit": 10000,  # images
        "epochs": 10,
        "bs": 128,
        "lr": 0.2,  # one-cycle peak
        "schedule": "one-cycle",
        "label_smoothing": 0.0,
        "wd": 5e-4,
        "train_eval": 5000,  # images for the clean training error
    },
    "long": {
        "train_limit": 20000,  # images
        "epochs": 20,
        "bs": 128,
        "lr": 0.2,
        "schedule": "one-cycle",
        "label_smoothing": 0.0,
        "wd": 5e-4,
        "train_eval": 5000,
    },
    "paper": {
        "train_limit": None,
        "epochs": 164,
        "bs": 128,
        "lr": 0.1,
        "schedule": "step",
        "milestones": [82, 123],
        "label_smoothing": 0.0,
        "wd": 1e-4,
        "momentum": 0.9,
        "amp": False,
        "train_eval": 10000,
        "warmup_epochs": 1,  # ResNet-110 only, as in the paper (WARMUP_MIN_DEPTH)
    },
}
# He et al. warmed up only their 110-layer nets ("0.1 is slightly too large to start
# converging"); shallower nets start at the full LR.
WARMUP_MIN_DEPTH = 110
# What the recipe may take from a budget, and what the command line may override.
RECIPE_KEYS = (
    "train_limit", "epochs", "bs", "lr", "schedule", "milestones", "label_smoothing", "wd",
    "momentum", "amp", "train_eval", "warmup_epochs",
)  # fmt: skip


@dataclass
class DegradationConfig:
    """Options of ``reslab experiment degradation``."""

    data: str = option("cifar10", DATA)
    data_dir: str | None = option(None, DATA_DIR)
    depths: list[int] = option([20, 56], DEPTHS)
    arms: list[str] = option(["plain", "residual"], ARMS_OPTION)
    seeds: int = option(1, SEEDS)
    budget: str = option(
        "short", "a named recipe (explicit options override it)", choices=tuple(BUDGETS),
        group="experiment",
    )  # fmt: skip
    epochs: int | None = option(
        None, "epochs", "positive_int", default_text="the budget's", group="optimisation"
    )
    train_limit: int | None = option(None, TRAIN_LIMIT, default_text="the budget's")
    bs: int | None = option(None, BS, default_text="the budget's")
    lr: float | None = option(None, LR, default_text="the budget's")
    schedule: str | None = option(
        None, "learning-rate schedule", choices=("one-cycle", "constant", "step"),
        default_text="the budget's", group="optimisation",
    )  # fmt: skip
    milestones: list[int] | None = option(None, MILESTONES, default_text="the budget's")
    warmup_epochs: int | None = option(
        None, WARMUP_EPOCHS,
        default_text=f"the budget's, for nets of {WARMUP_MIN_DEPTH}+ layers; others: 0",
    )  # fmt: skip
    label_smoothing: float | None = option(None, LABEL_SMOOTHING, default_text="the budget's")
    wd: float | None = option(None, WD, default_text="the budget's")
    momentum: float | None = option(None, MOMENTUM, default_text="the budget's")
    amp: bool | None = option(None, AMP, default_text="the budget's, else on where bf16 is native")
    train_eval: int | None = option(None, TRAIN_EVAL, default_text="the budget's")
    out: str = option("runs/degradation", EXPERIMENT_OUT)
    device: str | None = option(None, DEVICE, default_text="cuda when available")
    threads: int | None = option(None, THREADS, default_text="torch's")
    report: bool = option(True, REPORT)
    progress: bool = option(True, PROGRESS)

    def __post_init__(self) -> None:
        check_options(self)
        if self.train_eval == 0:
            raise ValueError("--train-eval: the experiment measures the clean training error; "
                             "give at least 1 image")  # fmt: skip
        lists: list[tuple[str, list[Any]]] = [("--depths", self.depths), ("--arms", self.arms)]
        for flag, values in lists:
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:  # one run folder each: a repeat would be counted twice in the summary
                raise ValueError(f"{flag}: {', '.join(repeated)} given more than once")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"--arms: unknown {', '.join(unknown)}; expected {', '.join(ARMS)}")
        for arm in self.arms:
            for depth in self.depths:
                name = ARMS[arm][0].format(depth=depth)
                if name not in list_models():
                    raise ValueError(f"--depths: no {arm} network of depth {depth} ({name})")

    def recipe(self) -> dict[str, Any]:
        """The training settings every run shares: the budget, with explicit options applied."""
        recipe = {k: BUDGETS[self.budget].get(k) for k in RECIPE_KEYS}
        recipe.update({k: getattr(self, k) for k in RECIPE_KEYS if getattr(self, k) is not None})
        return {"data": self.data, "budget": self.budget, **recipe}


def degradation_runs(cfg: DegradationConfig) -> list[ExperimentRun]:
    """Every (arm, depth, seed) as a training run, shallow before deep, plain before residual."""
    recipe = cfg.recipe()
    train = {k: recipe[k] for k in RECIPE_KEYS if recipe[k] is not None}
    runs = []
    for seed in range(cfg.seeds):
        for arm in cfg.arms:
            template, options = ARMS[arm]
            for depth in cfg.depths:
                warmup = {"warmup_epochs": 0} if depth < WARMUP_MIN_DEPTH else {}
                config = TrainConfig(
                    data=cfg.data, data_dir=cfg.data_dir, out=".", seed=seed,
                    model=template.format(depth=depth), device=cfg.device,
                    threads=cfg.threads, progress=cfg.progress, **options, **{**train, **warmup},
                )  # fmt: skip
                labels = {"arm": arm, "depth": depth, "seed": seed}
                runs.append(ExperimentRun(f"{arm}{depth}-s{seed}", config, labels))
    return runs


def run_degradation(cfg: DegradationConfig) -> dict[str, Any]:
    """Train what is missing, then write ``results.json``, ``results.md``, ``degradation.png``;
    return the results."""
    recipe = cfg.recipe()
    runs = degradation_runs(cfg)  # a bad option fails here, before the folder is touched
    with open_experiment(cfg.out, recipe, runs) as exp:
        folder = exp.path
        finished = [(run, metrics) for run, metrics in train_runs(exp, runs)]
        results = collect_results(exp, recipe, finished)
        write_results(folder, results)
        write_manifest(
            folder,
            "The degradation experiment: plain vs residual networks",
            __doc__.split("\n\n")[0].replace("\n", " "),
            figures=[{"file": FIGURE, "caption": "training (dashed, clean) and "
                      "test (bold) error per epoch; one colour per depth"}],
            tables=[{"file": names.RESULTS_MD, "title": "Results"}],
            facts=recipe,
        )  # fmt: skip
    return results
