"""The fastbook experiment's outputs: ``results.json``, ``results.md`` (each model next to the
accuracy the book prints, and how this run's data and recipe differ from the book's) and, where
the LR finder ran, ``lr_find.png``."""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from reslab.files import atomic_write, atomic_write_text
from reslab.models.profile import count_params
from reslab.runs import RunFileError, TrainMetrics, names, read_lr_find, write_results_json
from reslab.weights import load_checkpoint

__all__ = ["BOOK_ACCURACY", "collect_results", "results_markdown", "summarize", "write_results"]

# The accuracy the book prints after each model's last epoch (14_resnet.ipynb), in %.
BOOK_ACCURACY = {1: 65.9, 2: 66.8, 3: 69.3, 4: 75.7, 5: 87.3}
ACCURACY_PNG = "accuracy.png"  # the experiment's figures (experiment folder, not a run folder)
LR_FINDS_PNG = "lr_find.png"  # every model's LR finder in one figure
# Published reference: the Imagenette leaderboard, 128 px, 5 epochs (github.com/fastai/imagenette).
LEADERBOARD_128_5 = 85.77


def _run_entry(folder: Path, run: Any, metrics: TrainMetrics) -> dict[str, Any]:
    run_dir = folder / names.RUNS_DIR / run.name
    found = read_lr_find(run_dir)
    cfg = run.config
    if cfg.lr is None and (found is None or found.suggestion is None):
        raise RunFileError(f"{run_dir / names.LR_FIND_JSON}: missing, or without a suggestion")
    return {
        **run.labels,
        "presize": cfg.presize,
        "epochs": cfg.epochs,
        "parameters": count_params(load_checkpoint(run_dir / names.MODEL)),
        "accuracy": metrics.test_accuracy,
        "seconds": metrics.wall_seconds,
        "amp": metrics.amp,
        "lr": cfg.lr if cfg.lr is not None else found.suggestion,  # type: ignore[union-attr]
        "lr_find": {"lrs": found.lrs, "losses": found.losses} if found else None,
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[r["step"]].append(r)
    out = []
    for step, group in sorted(groups.items()):
        acc = [r["accuracy"] for r in group]
        out.append({
            "step": step, "model": group[0]["model"], "size": group[0]["size"],
            "presize": group[0]["presize"], "epochs": group[0]["epochs"],
            "parameters": group[0]["parameters"], "n": len(group),
            "accuracy_mean": statistics.fmean(acc),
            "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "seconds_mean": statistics.fmean(r["seconds"] for r in group),
            "book": BOOK_ACCURACY.get(step),
        })  # fmt: skip
    return out


def collect_results(
    folder: Path, recipe: dict[str, Any], finished, data_folder: str | None = None
) -> dict[str, Any]:
    """``{"data", "data_folder", "recipe", "runs": [...], "summary": [...]}``; accuracies as
    fractions, the book's in %."""
    runs = [_run_entry(Path(folder), run, metrics) for run, metrics in finished]
    return {
        "data": recipe["data"], "data_folder": data_folder, "recipe": recipe, "runs": runs,
        "summary": summarize(runs),
    }  # fmt: skip


def _ordering(summary: list[dict[str, Any]]) -> list[str]:
    means = {s["step"]: 100 * s["accuracy_mean"] for s in summary}
    if not all(i in means for i in (1, 2, 3, 4)):
        return []
    names = {1: "plain CNN", 2: "ResBlocks", 3: "two ResBlocks per stage", 4: "ResNet-18"}
    broken = [f"{names[i]} {means[i]:.1f} vs {names[i + 1]} {means[i + 1]:.1f}"
              for i in (1, 2, 3) if not means[i] < means[i + 1]]  # fmt: skip
    verdict = "holds" if not broken else f"does **not** hold ({'; '.join(broken)})"
    shown = ", ".join(f"{means[i]:.1f}" for i in (1, 2, 3, 4))
    return [
        "",
        "The chapter's ordering, plain CNN < ResBlocks < two ResBlocks per stage < ResNet-18 "
        f"(book: 65.9 < 66.8 < 69.3 < 75.7), {verdict} for the means here: {shown} %.",
    ]


def _data_note(folder: str | None) -> str:
    # A folder reslab made in its cache carries a 16-hex-digit key: not part of the data's name.
    name = re.sub(r"-[0-9a-f]{16}$", "", Path(folder).name) if folder else ""
    if "224sq" in name:
        return (
            f"Data: `{name}`, a copy of Imagenette whose images were squashed to 224 x 224 from "
            "the full-size originals; presizing resizes each whole squashed image to 160 x 160 "
            "(320 x 320 for the ResNet-50, an upsampling). The book trains on fastai's "
            "imagenette2-160 (shortest side 160 px; imagenette2-320 for the ResNet-50), where "
            "`Resize(160)` takes a square of each image at its true aspect ratio, at a random "
            "place in training."
        )
    return (
        f"Data: `{name or 'the folder given'}`; presizing resizes the short side and takes the "
        "central square (fastai's `Resize` takes it at a random place in training)."
    )


def _differences(results: dict[str, Any]) -> list[str]:
    amp = sorted({r["amp"] or "fp32" for r in results["runs"]})
    bs = results["recipe"]["bs"]
    return [
        "",
        "## How this run differs from the book",
        "",
        f"- {_data_note(results.get('data_folder'))}",
        "- Augmentation: random-resized square crops of 50–100 % of the area and horizontal "
        "flips, one draw per image, resampled with an antialiased bilinear filter. fastai's "
        "`aug_transforms(min_scale=0.5)` draws one crop per batch, and also warps (0.2), "
        "rotates (up to 10°), zooms (1–1.1x) and changes brightness and contrast (0.2), each "
        "with probability 0.75; reslab does not.",
        "- Optimiser and schedule: as fastai's defaults — Adam, betas (0.9, 0.99), eps 1e-5, "
        "decoupled weight decay 0.01 kept off norms and biases; one-cycle to the LR in the "
        "table, div 25, final div 1e5, 25 % warm-up, momentum 0.95-0.85-0.95; batch "
        f"{bs} (the book: 128).",
        f"- Precision: {', '.join(amp)} (bf16 autocast where the CPU has native bf16); the book "
        "used fp16 with loss scaling on a GPU.",
        "- Initialisation: every conv Kaiming-normal (fan-out), as torchvision; fastai gives a "
        "conv followed by a ReLU Kaiming-uniform (fan-in) and leaves the others at PyTorch's "
        "default. Both zero the last BatchNorm of every residual branch (BatchZero).",
        "- Validation: the val images (Imagenette: 3,925), each presized, then resized whole "
        "to the input side, as fastai's presizing does.",
    ]


def results_markdown(results: dict[str, Any]) -> str:
    recipe = results["recipe"]
    lr = f"at {recipe['lr']:g}" if recipe.get("lr") else "at the LR finder's suggestion"
    seeds = max(s["n"] for s in results["summary"])
    lines = [
        "# fastbook chapter 14 on Imagenette",
        "",
        f"Budget `{recipe['budget']}`; data {results['data']}; one-cycle {lr}, batch size "
        f"{recipe['bs']}; {seeds} seed(s) per model (accuracy: mean ± std over seeds).",
        "",
        "| step | model | size | epochs | parameters | accuracy % | book % | seconds per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in results["summary"]:
        acc = f"{100 * s['accuracy_mean']:.2f}"
        if s["n"] > 1:
            acc += f" ± {100 * s['accuracy_std']:.2f} ({s['n']})"
        book = f"{s['book']:.1f}" if s["book"] is not None else "–"
        size = f"{s['size']}" + (f" (from {s['presize']})" if s["presize"] else "")
        lines.append(
            f"| {s['step']} | {s['model']} | {size} | {s['epochs']} | {s['parameters']:,} | "
            f"{acc} | {book} | {s['seconds_mean']:.0f} |"
        )
    lines += _ordering(results["summary"])
    lines += ["", "| run | LR | accuracy % | seconds |", "|---|---|---|---|"]
    for r in results["runs"]:
        lines.append(
            f"| {r['step']}-{r['model']}-s{r['seed']} | {r['lr']:.2g} | "
            f"{100 * r['accuracy']:.2f} | {r['seconds']:.0f} |"
        )
    if recipe["budget"].startswith("book"):
        lines += _differences(results)
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
        if r["lr_find"] is None:
            continue
        label = f"{r['step']}. {r['model']} (seed {r['seed']})"
        ax.plot(r["lr_find"]["lrs"], r["lr_find"]["losses"], label=label)
        ax.axvline(r["lr"], lw=0.6, ls=":", color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("LR finder of each model (dotted: the LR used)", fontsize=9)
    ax.legend(fontsize=7)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def plot_accuracy(results: dict[str, Any], path: Path) -> Path:
    """Each model's accuracy (every seed a dot, the mean a bar) next to the book's."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = results["summary"]
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    xs = range(len(summary))
    means = [100 * s["accuracy_mean"] for s in summary]
    ax.bar(xs, means, width=0.6, color="#9ecae1", label="reslab (mean)")
    for x, s in zip(xs, summary):
        accs = [100 * r["accuracy"] for r in results["runs"] if r["step"] == s["step"]]
        ax.plot([x] * len(accs), accs, "o", color="#08519c", ms=3.5,
                label="reslab (one seed)" if x == 0 else None)  # fmt: skip
        if s["book"] is not None:
            ax.plot([x - 0.3, x + 0.3], [s["book"]] * 2, color="#d95f02", lw=2,
                    label="the book" if x == 0 else None)  # fmt: skip
    ax.set_xticks(list(xs), [f"{s['step']}. {s['model']}" for s in summary], fontsize=7,
                  rotation=15)  # fmt: skip
    books = [s["book"] for s in summary if s["book"] is not None]
    accs = [100 * r["accuracy"] for r in results["runs"]]
    ax.set_ylim(max(0, min(accs + books) - 10), min(100, max(accs + books) + 6))
    ax.set_ylabel("val accuracy %")
    ax.set_title(f"fastbook ch. 14, budget {results['recipe']['budget']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def write_results(folder: Path, results: dict[str, Any]) -> list[dict[str, str]]:
    """Write the result files; return the figures written, for the experiment's manifest."""
    folder = Path(folder)
    write_results_json(folder, results)
    atomic_write_text(folder / names.RESULTS_MD, results_markdown(results))
    plot_accuracy(results, folder / ACCURACY_PNG)
    figures = [{"file": ACCURACY_PNG, "caption": "each model's accuracy next to the book's"}]
    if any(r["lr_find"] for r in results["runs"]):
        plot_lr_finds(results, folder / LR_FINDS_PNG)
        figures.append({"file": LR_FINDS_PNG, "caption": "the LR finder of each model"})
    return figures
