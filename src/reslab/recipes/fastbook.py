"""fastbook's chapter 14 ("ResNets") as a reproducible progression on Imagenette.

The chapter trains, in order, with ``lr_find`` and ``fit_one_cycle``: (1) a plain CNN of five
stride-2 conv layers, (2) the same stages as ResBlocks, (3) two ResBlocks per stage, (4) its
ResNet-18 (stem 3→32→32→64, max-pool, [2, 2, 2, 2] ResBlocks — reslab's ``xresnet18``) and
(5) the bottleneck ResNet-50 (``xresnet50``) at 224 px for 20 epochs. Each model is an ordinary
run folder (:mod:`reslab.recipes.experiment`); the experiment writes a table (model,
parameters, accuracy, seconds) and the LR-finder curves of all models in one figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reslab.files import atomic_write, atomic_write_text
from reslab.models.profile import count_params
from reslab.recipes.experiment import ExperimentRun, open_experiment, train_runs
from reslab.recipes.options import check_options, option
from reslab.recipes.shared_options import (
    BS,
    DATA,
    DEVICE,
    EXPERIMENT_OUT,
    PROGRESS,
    REPORT,
    THREADS,
    TRAIN_LIMIT,
    WD,
    WORKERS,
)
from reslab.recipes.train_config import TrainConfig
from reslab.runs import (
    ExperimentFolder,
    RunFileError,
    TrainMetrics,
    names,
    read_lr_find,
    write_manifest,
    write_results_json,
)
from reslab.weights import load_checkpoint

__all__ = ["FASTBOOK_BUDGETS", "FastbookConfig", "fastbook_runs", "run_fastbook"]

# (model, input side, epochs) per step of the chapter, for each budget. "book" is the chapter
# (128 px, 5 epochs; ResNet-50 at 224 px for 20); "cpu" fits in about half an hour on two
# cores: models 1-4 at 64 px.
FASTBOOK_BUDGETS: dict[str, list[tuple[str, int, int]]] = {
    "book": [
        ("fastbook_plain_cnn", 128, 5),
        ("fastbook_resblocks", 128, 5),
        ("fastbook_resblocks_x2", 128, 5),
        ("xresnet18", 128, 5),
        ("xresnet50", 224, 20),
    ],
    "cpu": [
        ("fastbook_plain_cnn", 64, 5),
        ("fastbook_resblocks", 64, 5),
        ("fastbook_resblocks_x2", 64, 5),
        ("xresnet18", 64, 5),
    ],
}
LR_FINDS_PNG = "lr_find.png"  # the experiment's figure: every model's LR finder
# Published reference: the Imagenette leaderboard, 128 px, 5 epochs (github.com/fastai/imagenette).
LEADERBOARD_128_5 = 85.77


@dataclass
class FastbookConfig:
    """Options of ``reslab experiment fastbook``."""

    data: str = option(None, DATA, required=True)
    budget: str = option(
        "cpu", "book: the chapter; cpu: models 1-4 at 64 px", choices=tuple(FASTBOOK_BUDGETS),
        group="experiment",
    )  # fmt: skip
    steps: list[int] | None = option(
        None, "which of the budget's models to train (1-5)", "ints", default_text="all",
        group="experiment",
    )  # fmt: skip
    epochs: int | None = option(
        None, "epochs per model", "positive_int", default_text="the budget's",
        group="optimisation",
    )  # fmt: skip
    bs: int = option(64, BS)
    wd: float = option(0.01, WD, default_text="0.01, fastai's for AdamW")
    train_limit: int | None = option(None, TRAIN_LIMIT)
    workers: int = option(2, WORKERS)
    out: str = option("runs/fastbook", EXPERIMENT_OUT)
    device: str | None = option(None, DEVICE, default_text="cuda when available")
    threads: int | None = option(None, THREADS, default_text="torch's")
    report: bool = option(True, REPORT)
    progress: bool = option(True, PROGRESS)

    def __post_init__(self) -> None:
        if self.data is None:
            raise ValueError("--data is required: an Imagenette folder with train/ and val/")
        check_options(self)
        self.recipe()  # checks --steps

    def recipe(self) -> dict[str, Any]:
        budget = FASTBOOK_BUDGETS[self.budget]
        chosen = sorted(set(self.steps or range(1, len(budget) + 1)))
        if chosen[-1] > len(budget):
            raise ValueError(f"--steps: the {self.budget} budget has {len(budget)} models")
        steps = [[i, *budget[i - 1][:2], self.epochs or budget[i - 1][2]] for i in chosen]
        return {
            "data": self.data, "budget": self.budget, "steps": steps, "bs": self.bs,
            "wd": self.wd, "train_limit": self.train_limit, "opt": "adamw", "lr_find": True,
        }  # fmt: skip


def fastbook_runs(cfg: FastbookConfig) -> list[ExperimentRun]:
    runs = []
    for i, name, size, epochs in cfg.recipe()["steps"]:
        config = TrainConfig(
            data=cfg.data, out=".", model=name, size=size, epochs=epochs, bs=cfg.bs, opt="adamw",
            wd=cfg.wd, lr_find=True, label_smoothing=0.0, train_limit=cfg.train_limit,
            workers=cfg.workers, device=cfg.device, threads=cfg.threads, progress=cfg.progress,
        )  # fmt: skip
        runs.append(ExperimentRun(f"{i}-{name}", config, {"step": i, "model": name, "size": size}))
    return runs


def _row(exp: ExperimentFolder, run: ExperimentRun, metrics: TrainMetrics) -> dict[str, Any]:
    folder = exp.run(run.name)
    lr_find = read_lr_find(folder.path)
    if lr_find is None or lr_find.suggestion is None:
        raise RunFileError(f"{folder.path / names.LR_FIND_JSON}: missing, or without a suggestion")
    return {
        **run.labels,
        "parameters": count_params(load_checkpoint(folder.path / names.MODEL)),
        "epochs": run.config.epochs,
        "accuracy": metrics.test_accuracy,
        "seconds": metrics.wall_seconds,
        "lr": lr_find.suggestion,
        "lr_find": {"lrs": lr_find.lrs, "losses": lr_find.losses},
    }


def results_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# fastbook chapter 14 on Imagenette",
        "",
        f"Budget `{results['recipe']['budget']}`; data {results['data']}; AdamW, one-cycle at the "
        "LR finder's suggestion, batch size "
        f"{results['recipe']['bs']}.",
        "",
        "| step | model | size | epochs | parameters | LR | accuracy % | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['step']} | {r['model']} | {r['size']} | {r['epochs']} | {r['parameters']:,} | "
            f"{r['lr']:.2g} | {100 * r['accuracy']:.2f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        f"Reference: the Imagenette leaderboard, 128 px and 5 epochs, {LEADERBOARD_128_5} % "
        "with a tuned network (github.com/fastai/imagenette).",
    ]
    return "\n".join(lines) + "\n"


def plot_lr_finds(results: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in results["runs"]:
        ax.plot(r["lr_find"]["lrs"], r["lr_find"]["losses"], label=f"{r['step']}. {r['model']}")
        ax.axvline(r["lr"], lw=0.6, ls=":", color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("LR finder of each model (dotted: the suggestion used)", fontsize=9)
    ax.legend(fontsize=7)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def run_fastbook(cfg: FastbookConfig) -> dict[str, Any]:
    recipe = cfg.recipe()
    runs = fastbook_runs(cfg)  # a bad option fails here, before the folder is touched
    with open_experiment(cfg.out, recipe, runs) as exp:
        folder = exp.path
        rows = [_row(exp, run, m) for run, m in train_runs(exp, runs)]
        results = {"data": cfg.data, "recipe": recipe, "runs": rows}
        write_results_json(folder, results)
        atomic_write_text(folder / names.RESULTS_MD, results_markdown(results))
        plot_lr_finds(results, folder / LR_FINDS_PNG)
        write_manifest(
            folder,
            "fastbook chapter 14 on Imagenette",
            "From a plain CNN to a ResNet, each model trained with lr_find and fit_one_cycle.",
            figures=[{"file": LR_FINDS_PNG, "caption": "the LR finder of each model"}],
            tables=[{"file": names.RESULTS_MD, "title": "Models"}],
            facts={k: v for k, v in recipe.items() if k != "steps"},
        )
    return results
