"""An experiment is a recipe over runs: ordinary ``reslab train`` run folders under
``DIR/runs/<name>/``, one shared recipe stored in ``DIR/recipe.json``.

Running the same experiment again skips the finished runs, resumes a killed one from its last
checkpoint (a kill loses at most the epoch in progress) and starts the missing ones. A changed
recipe on an existing folder is refused: the runs of one folder are comparable because they
share everything but what the experiment varies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reslab.files import FolderLock, atomic_write_json, check_output_dir, sweep_temp_files
from reslab.recipes.run import RunFolderError
from reslab.recipes.train import resume_config, run_training
from reslab.recipes.train_config import TrainConfig

__all__ = ["ExperimentRun", "open_experiment", "run_state", "train_runs", "write_manifest"]

RECIPE_FILE = "recipe.json"
# What `reslab report` shows of an experiment folder (see reslab.analysis.report.experiment).
MANIFEST_FILE = "experiment.json"


@dataclass(frozen=True)
class ExperimentRun:
    """One run of an experiment: its name (its folder under ``runs/``), its training config,
    and the experiment's labels for it (e.g. ``{"arm": "plain", "depth": 56, "seed": 0}``)."""

    name: str
    config: TrainConfig
    labels: dict[str, Any]


def run_state(folder: Path) -> str:
    """``finished``, ``partial`` (has a checkpoint), ``started`` (killed before its first
    checkpoint) or ``new``."""
    if (folder / "metrics.json").is_file() and (folder / "model.safetensors").is_file():
        return "finished"
    if (folder / "checkpoint.safetensors").is_file():
        return "partial"
    return "started" if folder.is_dir() and any(folder.iterdir()) else "new"


def _check_recipe(folder: Path, recipe: dict[str, Any]) -> None:
    path = folder / RECIPE_FILE
    if not path.is_file():
        atomic_write_json(path, recipe)
        return
    saved = json.loads(path.read_text())
    changed = sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))
    if changed:
        raise RunFolderError(
            f"{folder} holds an experiment with another recipe (changed: {', '.join(changed)}); "
            "use another folder, or the same options to continue it"
        )


class open_experiment:  # noqa: N801 - used as a context manager, like open()
    """Hold the experiment folder's lock, check (or store) its recipe; ``with`` statement."""

    def __init__(self, folder: str | Path, recipe: dict[str, Any]) -> None:
        self.folder = check_output_dir(folder)
        self.recipe = recipe
        self.lock: FolderLock | None = None

    def __enter__(self) -> Path:
        self.lock = FolderLock(self.folder)
        try:
            sweep_temp_files(self.folder)
            _check_recipe(self.folder, self.recipe)
        except BaseException:
            self.lock.release()
            raise
        return self.folder

    def __exit__(self, *exc: object) -> None:
        if self.lock is not None:
            self.lock.release()


def write_manifest(
    folder: Path,
    title: str,
    description: str,
    *,
    figures: Sequence[dict[str, str]],
    tables: Sequence[dict[str, str]],
    facts: dict[str, Any],
) -> Path:
    """``experiment.json``: the title, text, figures and result tables of the folder, for
    ``reslab report``."""
    manifest = {
        "version": 1,
        "title": title,
        "description": description,
        "command": ["reslab", *sys.argv[1:]] if sys.argv[1:] else "reslab",
        "figures": list(figures),
        "tables": list(tables),
        "facts": {
            k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
            for k, v in facts.items()
        },  # fmt: skip
    }
    return atomic_write_json(folder / MANIFEST_FILE, manifest)


def train_runs(
    folder: Path,
    runs: Sequence[ExperimentRun],
    *,
    say: Callable[[str], None] = print,
) -> Iterator[tuple[ExperimentRun, dict[str, Any]]]:
    """Train every run that is not finished (resuming partial ones); yield each run with its
    metrics, in order."""
    for i, run in enumerate(runs, 1):
        out = folder / "runs" / run.name
        state = run_state(out)
        tag = f"[{i}/{len(runs)}] {run.name}"
        if state == "finished":
            say(f"{tag}: finished earlier, skipped")
            yield run, json.loads((out / "metrics.json").read_text())
            continue
        if state == "partial":
            say(f"{tag}: resuming from its last checkpoint")
            runtime = {"device": run.config.device, "threads": run.config.threads}
            metrics = run_training(resume_config(out, runtime), resume=True)
        else:
            say(f"{tag}: training")
            cfg = TrainConfig.from_dict(
                {**run.config.to_dict(), "out": str(out), "overwrite": state == "started"}
            )
            metrics = run_training(cfg)
        yield run, metrics
