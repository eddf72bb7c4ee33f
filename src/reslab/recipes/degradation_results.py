"""The degradation experiment's outputs: ``results.json``, ``results.md`` (measured next to
the published numbers) and ``degradation.png`` in the style of the paper's Fig. 6."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from reslab.files import atomic_write, atomic_write_text
from reslab.runs import (
    ExperimentFolder,
    RunFileError,
    TrainMetrics,
    names,
    read_history,
    read_results,
    write_results_json,
)

__all__ = [
    "FIGURE",
    "collect_results",
    "finished_runs",
    "plot_degradation",
    "results_markdown",
    "write_results",
]

FIGURE = "degradation.png"  # the experiment's figure (the paper's Fig. 6)

# CIFAR-10 test error (%) of the residual networks: He et al. 2015, Table 6, and a faithful
# PyTorch reproduction (github.com/akamaster/pytorch_resnet_cifar10, its README's table).
PAPER_TABLE_6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
AKAMASTER = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32}


def _error(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return None if value is None else 1.0 - float(value)


def _run_entry(exp: ExperimentFolder, run, metrics: TrainMetrics) -> dict[str, Any]:
    folder = exp.run(run.name).path
    history = read_history(folder)
    if history is None:
        raise RunFileError(f"{folder / names.HISTORY_JSON}: missing (the run's per-epoch errors)")
    rows = [
        {
            "epoch": row["epoch"],
            "train_error": _error(row, "train_eval_accuracy"),
            "running_train_error": _error(row, "train_accuracy"),
            "test_error": _error(row, "accuracy"),
        }
        for row in history.rows
    ]
    return {
        **run.labels,
        "run": run.name,  # its folder under runs/
        "model": run.config.model,
        "final_train_error": rows[-1]["train_error"] if rows else None,
        "final_running_train_error": rows[-1]["running_train_error"] if rows else None,
        "final_test_error": 1.0 - float(metrics.test_accuracy),
        "train_seconds": metrics.train_seconds,
        "history": rows,
    }


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["arm"], run["depth"])].append(run)
    out = []
    for (arm, depth), group in groups.items():
        train = [r["final_train_error"] for r in group if r["final_train_error"] is not None]
        test = [r["final_test_error"] for r in group]
        train_mean, train_std = _stats(train) if train else (None, None)
        test_mean, test_std = _stats(test)
        out.append({
            "arm": arm, "depth": depth, "train_error_mean": train_mean,
            "train_error_std": train_std, "test_error_mean": test_mean,
            "test_error_std": test_std, "n": len(group),
        })  # fmt: skip
    return out


def collect_results(exp: ExperimentFolder, recipe: dict[str, Any], finished) -> dict[str, Any]:
    """``{"data", "recipe", "runs": [...], "summary": [...]}``, errors as fractions."""
    runs = [_run_entry(exp, run, metrics) for run, metrics in finished]
    return {"data": recipe["data"], "recipe": recipe, "runs": runs, "summary": _summary(runs)}


def _pct(value: float | None, std: float | None = None, n: int = 1) -> str:
    if value is None:
        return "–"
    if n > 1 and std is not None:
        return f"{100 * value:.2f} ± {100 * std:.2f}"
    return f"{100 * value:.2f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The measured table next to the published numbers, and how the recipe differs."""
    recipe = results["recipe"]
    lines = [
        "# The degradation experiment",
        "",
        f"Data: {results['data']}; budget `{recipe['budget']}`: "
        + ", ".join(
            f"{k} {v}" for k, v in recipe.items() if k not in ("data", "budget") and v is not None
        ),
        "",
        "| arm | depth | clean training error % | test error % | runs |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(results["summary"], key=lambda r: (r["arm"], r["depth"])):
        train = _pct(row["train_error_mean"], row["train_error_std"], row["n"])
        test = _pct(row["test_error_mean"], row["test_error_std"], row["n"])
        lines.append(f"| {row['arm']} | {row['depth']} | {train} | {test} | {row['n']} |")
    lines += [
        "",
        "Published CIFAR-10 test errors of the residual networks (%), for reference:",
        "",
        "| depth | He et al. 2015, Table 6 | akamaster/pytorch_resnet_cifar10 |",
        "|---|---|---|",
    ]
    for depth, paper in PAPER_TABLE_6.items():
        lines.append(f"| {depth} | {paper:.2f} | {AKAMASTER.get(depth, '–')} |")
    lines += ["", RECIPE_NOTE]
    return "\n".join(lines) + "\n"


RECIPE_NOTE = (
    "How this differs from the paper: the paper trains on 45k of the 50k training images for "
    "64k iterations (164 epochs) at batch 128 with the LR divided by 10 at 32k and 48k; the "
    "`short` and `long` budgets train on a fixed subset for a few epochs with a one-cycle "
    "schedule, so their errors are far above the paper's. The `paper` budget follows the "
    "paper's schedule and its 110-layer warm-up on all 50k images, with Nesterov momentum and "
    "no weight decay on BatchNorm and biases. reslab reads CIFAR-10 from the "
    "official pickles when present, else from a JPEG copy (quality about 75: pixels differ "
    "from the originals by about 8/255 on average), which costs accuracy too. The clean "
    "training error is measured in eval mode without augmentation on a fixed subset of the "
    "training images, as the paper's Fig. 6 plots it; the running training error is the "
    "accuracy of the augmented training batches as they were trained on."
)


def plot_degradation(results: dict[str, Any], path: Path) -> Path:
    """One panel per arm, error (%) per epoch, one colour per depth: thin dashed = training
    error (clean), bold = test error; several seeds are averaged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    arms = list(dict.fromkeys(r["arm"] for r in results["runs"]))
    depths = sorted({r["depth"] for r in results["runs"]})
    fig = Figure(figsize=(4.2 * len(arms), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(arms), squeeze=False, sharey=True)[0]
    colors = {d: f"C{i}" for i, d in enumerate(depths)}
    for ax, arm in zip(axes, arms):
        for depth in depths:
            runs = [r for r in results["runs"] if r["arm"] == arm and r["depth"] == depth]
            if not runs:
                continue
            for key, style in (("train_error", "--"), ("test_error", "-")):
                epochs, values = _mean_curve(runs, key)
                width = 1.0 if style == "--" else 2.2
                label = f"{depth}-layer {'train' if style == '--' else 'test'}"
                ax.plot(epochs, values, style, color=colors[depth], lw=width, label=label)
        ax.set_title(arm)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("error (%)")
    fig.suptitle("Degradation: training (dashed) and test (bold) error", fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def _mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for row in run["history"]:
            if row[key] is not None:
                by_epoch[row["epoch"]].append(100 * row[key])
    epochs = sorted(by_epoch)
    return epochs, [statistics.fmean(by_epoch[e]) for e in epochs]


def write_results(folder: Path, results: dict[str, Any]) -> None:
    write_results_json(folder, results)
    atomic_write_text(folder / names.RESULTS_MD, results_markdown(results))
    plot_degradation(results, folder / FIGURE)


def finished_runs(folder: str | Path) -> list[dict[str, Any]]:
    """The runs of a finished degradation experiment folder, from its results.json: each
    ``{"run", "arm", "depth", "seed", "model", "path"}`` (``path``: the run folder)."""
    folder = Path(folder)
    results = read_results(folder)
    if results is None:
        raise RunFileError(f"{folder}: no {names.RESULTS_JSON} (has the experiment finished?)")
    try:
        out = []
        for r in results["runs"]:
            name = r.get("run") or f"{r['arm']}{r['depth']}-s{r['seed']}"  # before "run" was kept
            labels = {"run": name, "arm": r["arm"], "depth": int(r["depth"]), "seed": r["seed"]}
            out.append({**labels, "model": r["model"], "path": folder / names.RUNS_DIR / name})
    except (ValueError, KeyError, TypeError) as err:
        raise RunFileError(
            f"{folder / names.RESULTS_JSON}: not a degradation experiment's results ({err})"
        ) from None
    return out
