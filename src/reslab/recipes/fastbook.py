"""fastbook's chapter 14 ("ResNets") as a reproducible progression on Imagenette.

The chapter trains, in order: (1) a plain CNN of five stride-2 conv layers, (2) the same stages
as ResBlocks, (3) two ResBlocks per stage, (4) its ResNet-18 (stem 3→32→32→64, max-pool,
[2, 2, 2, 2] ResBlocks — reslab's ``xresnet18``) and (5) the bottleneck ResNet-50
(``xresnet50``) at 224 px for 20 epochs. Each model is an ordinary run folder
(:mod:`reslab.recipes.experiment`), once per seed; the experiment writes a table (model,
parameters, accuracy mean ± std over seeds, seconds, the book's accuracy) and, where the LR
finder ran, its curves.

Budgets: ``book`` is the chapter's recipe for models 1–4 (``--steps 5``: the ResNet-50);
``book-r50`` is the ResNet-50 alone; ``cpu`` is the earlier reduced recipe (64 px, AdamW at the
LR finder's suggestion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reslab.data.imagenette import find_imagenette
from reslab.recipes.experiment import ExperimentRun, open_experiment, train_runs
from reslab.recipes.fastbook_results import BOOK_ACCURACY, collect_results, write_results
from reslab.recipes.options import check_options, option
from reslab.recipes.shared_options import (
    BS,
    DATA,
    DATA_DIR,
    DEVICE,
    EXPERIMENT_OUT,
    LR,
    LR_FIND,
    PROGRESS,
    REPORT,
    SEEDS,
    THREADS,
    TRAIN_LIMIT,
    WD,
    WORKERS,
)
from reslab.recipes.train_config import TrainConfig
from reslab.runs import names, write_manifest

__all__ = ["BOOK_ACCURACY", "FASTBOOK_BUDGETS", "FastbookConfig", "fastbook_runs", "run_fastbook"]

# The chapter's five trainings: (model, crop side px, presize px or None, epochs). Models 1-4:
# `Resize(160)` then `aug_transforms(min_scale=0.5, size=128)`; ResNet-50: 320 then 224.
BOOK_STEPS = (
    ("fastbook_plain_cnn", 128, 160, 5),
    ("fastbook_resblocks", 128, 160, 5),
    ("fastbook_resblocks_x2", 128, 160, 5),
    ("xresnet18", 128, 160, 5),
    ("xresnet50", 224, 320, 20),
)
# How the chapter trains (fastai's defaults): Adam with beta1 0.9 (cycled 0.95-0.85 by
# one-cycle), beta2 0.99, eps 1e-5, true weight decay 0.01 kept off BN and biases; batch 128;
# fit_one_cycle(epochs, 3e-3) with div 25, div_final 1e5, pct_start 0.25; plain
# cross-entropy; random-resized square crops of 50-100 % of the area, and flips.
BOOK_TRAIN: dict[str, Any] = {
    "bs": 128, "lr": 3e-3, "opt": "adamw", "wd": 0.01, "beta2": 0.99, "eps": 1e-5,
    "div_final": 1e5, "pct_start": 0.25, "label_smoothing": 0.0, "min_scale": 0.5,
    "square_crops": True,
}  # fmt: skip


@dataclass(frozen=True)
class FastbookBudget:
    """A named recipe: the models (steps) it can train, which of them by default, and the
    training settings every run shares (``lr`` None: the LR finder's suggestion)."""

    steps: tuple[tuple[str, int, int | None, int], ...]
    default_steps: tuple[int, ...]
    train: dict[str, Any] = field(default_factory=dict)
    lr_find: bool = False


FASTBOOK_BUDGETS: dict[str, FastbookBudget] = {
    "book": FastbookBudget(BOOK_STEPS, (1, 2, 3, 4), BOOK_TRAIN),
    "book-r50": FastbookBudget(BOOK_STEPS, (5,), BOOK_TRAIN),
    # The earlier reduced budget: models 1-4 at 64 px straight from the files, batch 64,
    # AdamW (wd 0.01) at the LR finder's suggestion.
    "cpu": FastbookBudget(
        tuple((m, 64, None, 5) for m, *_ in BOOK_STEPS[:4]),
        (1, 2, 3, 4),
        {"bs": 64, "lr": None, "opt": "adamw", "wd": 0.01, "label_smoothing": 0.0},
        lr_find=True,
    ),
}


@dataclass
class FastbookConfig:
    """Options of ``reslab experiment fastbook``."""

    data: str = option("imagenette", DATA)
    data_dir: str | None = option(None, DATA_DIR)
    budget: str = option(
        "cpu",
        "book: the chapter's recipe, models 1-4 (128 px); book-r50: its ResNet-50 (224 px, "
        "20 epochs; a GPU); cpu: models 1-4 at 64 px with the LR finder's suggestion",
        choices=tuple(FASTBOOK_BUDGETS),
        group="experiment",
    )
    steps: list[int] | None = option(
        None, "which of the chapter's models to train (1-5)", "ints", default_text="the budget's",
        group="experiment",
    )  # fmt: skip
    seeds: int = option(1, SEEDS)
    epochs: int | None = option(
        None, "epochs per model", "positive_int", default_text="the budget's",
        group="optimisation",
    )  # fmt: skip
    bs: int | None = option(None, BS, default_text="the budget's")
    lr: float | None = option(
        None, LR, default_text="the budget's: 3e-3 (book), the LR finder's suggestion (cpu)"
    )
    lr_find: bool | None = option(None, LR_FIND, default_text="the budget's")
    wd: float | None = option(None, WD, default_text="0.01")
    train_limit: int | None = option(None, TRAIN_LIMIT)
    workers: int = option(2, WORKERS)
    out: str = option("runs/fastbook", EXPERIMENT_OUT)
    device: str | None = option(None, DEVICE, default_text="cuda when available")
    threads: int | None = option(None, THREADS, default_text="torch's")
    report: bool = option(True, REPORT)
    progress: bool = option(True, PROGRESS)

    def __post_init__(self) -> None:
        check_options(self)
        self.recipe()  # checks --steps

    def recipe(self) -> dict[str, Any]:
        """What every run of the experiment shares (stored in the folder's recipe.json)."""
        budget = FASTBOOK_BUDGETS[self.budget]
        chosen = sorted(set(self.steps or budget.default_steps))
        if chosen[-1] > len(budget.steps):
            raise ValueError(f"--steps: the {self.budget} budget has {len(budget.steps)} models")
        steps = [[i, *budget.steps[i - 1][:3], self.epochs or budget.steps[i - 1][3]]
                 for i in chosen]  # fmt: skip
        train = dict(budget.train)
        train.update(
            {k: getattr(self, k) for k in ("bs", "lr", "wd") if getattr(self, k) is not None}
        )
        lr_find = budget.lr_find if self.lr_find is None else self.lr_find
        if train.get("lr") is None and not lr_find:
            raise ValueError("--no-lr-find: the cpu budget takes the LR finder's LR; pass --lr")
        # Not the seed count: a folder may gain seeds later, its runs stay comparable.
        return {
            "data": self.data, "budget": self.budget, "steps": steps,
            "train_limit": self.train_limit, "lr_find": lr_find, **train,
        }  # fmt: skip


def fastbook_runs(cfg: FastbookConfig) -> list[ExperimentRun]:
    """Every (seed, step) as a training run: all models of seed 0 first."""
    recipe = cfg.recipe()
    train = FASTBOOK_BUDGETS[cfg.budget].train
    shared = {k: recipe[k] for k in train if recipe.get(k) is not None}
    runs = []
    for seed in range(cfg.seeds):
        for i, name, size, presize, epochs in recipe["steps"]:
            config = TrainConfig(
                data=cfg.data, data_dir=cfg.data_dir, out=".", model=name, size=size,
                presize=presize, epochs=epochs, seed=seed, lr_find=recipe["lr_find"],
                train_limit=cfg.train_limit, workers=cfg.workers, device=cfg.device,
                threads=cfg.threads, progress=cfg.progress, **shared,
            )  # fmt: skip
            labels = {"step": i, "model": name, "size": size, "seed": seed}
            runs.append(ExperimentRun(f"{i}-{name}-s{seed}", config, labels))
    return runs


def _data_folder(cfg: FastbookConfig) -> str:
    if cfg.data.lower() == "imagenette":
        return str(find_imagenette(cfg.data_dir))
    return str(Path(cfg.data).expanduser().resolve())


def run_fastbook(cfg: FastbookConfig) -> dict[str, Any]:
    """Train what is missing, then write ``results.json``, ``results.md`` (and ``lr_find.png``
    where the LR finder ran); return the results."""
    recipe = cfg.recipe()
    runs = fastbook_runs(cfg)  # a bad option fails here, before the folder is touched
    with open_experiment(cfg.out, recipe, runs) as exp:
        folder = exp.path
        finished = list(train_runs(exp, runs))
        results = collect_results(folder, recipe, finished, _data_folder(cfg))
        figures = write_results(folder, results)
        write_manifest(
            folder,
            "fastbook chapter 14 on Imagenette",
            "From a plain CNN to a ResNet, each model trained with one-cycle, next to the "
            "accuracy the book prints.",
            figures=figures,
            tables=[{"file": names.RESULTS_MD, "title": "Models"}],
            facts={k: v for k, v in recipe.items() if k != "steps"},
        )
    return results
