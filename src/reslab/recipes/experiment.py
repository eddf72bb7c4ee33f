"""An experiment is a recipe over runs: ordinary ``reslab train`` run folders under
``DIR/runs/<name>/``, one shared recipe stored in the folder (:mod:`reslab.runs`).

Running the same experiment again skips the finished runs, resumes a killed one from its last
checkpoint (a kill loses at most the epoch in progress) and starts the missing ones. Only runs
of this recipe are skipped, resumed or reported: a changed recipe on an existing folder is
refused, and so is a run folder whose own config differs from what this recipe would train
(trained by another recipe, or replaced by hand) — whether or not the recipe file is still
there. The experiment holds every run folder's lock while it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from reslab.recipes.run import RunFolderError
from reslab.recipes.train import RUNTIME_OPTIONS, resume_config, run_training
from reslab.recipes.train_config import TrainConfig
from reslab.runs import ExperimentFolder, RunFolder, TrainMetrics, read_config, read_metrics

__all__ = ["ExperimentRun", "config_changes", "open_experiment", "train_runs"]

# Options that never make two runs different: where the run is, and how to treat its folder.
NOT_RECIPE = (*RUNTIME_OPTIONS, "out", "overwrite", "data_dir")


@dataclass(frozen=True)
class ExperimentRun:
    """One run of an experiment: its name (its folder under ``runs/``), its training config,
    and the experiment's labels for it (e.g. ``{"arm": "plain", "depth": 56, "seed": 0}``)."""

    name: str
    config: TrainConfig
    labels: dict[str, Any]


def config_changes(saved: dict[str, Any], expected: TrainConfig) -> list[str]:
    """The options in which a run's ``saved`` config differs from ``expected`` (runtime and
    location options aside; mixed precision left to the machine matches either choice). An
    option the saved config lacks (a run written before the option existed) counts as its
    default, as resuming that run would read it."""
    defaults = {
        f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        for f in fields(TrainConfig)
        if f.default is not MISSING or f.default_factory is not MISSING
    }
    want = {k: v for k, v in expected.to_dict().items() if k not in NOT_RECIPE}
    if want.get("amp") is None:
        want.pop("amp", None)
    return sorted(k for k, v in want.items() if saved.get(k, defaults.get(k)) != v)


def open_experiment(
    folder: str, recipe: dict[str, Any], runs: Sequence[ExperimentRun]
) -> ExperimentFolder:
    """The experiment folder, to use in a ``with`` statement: it holds the folder's lock and
    every run's lock, with the recipe checked (or stored)."""
    return ExperimentFolder(folder, recipe, [run.name for run in runs])


def _saved_config(folder: RunFolder, state: str) -> dict[str, Any] | None:
    config = read_config(folder.path)
    if config is not None:
        return config.options
    if state == "partial":
        return resume_config(folder.path).to_dict()
    return None


def _check_run(folder: RunFolder, run: ExperimentRun, state: str) -> None:
    """Refuse a run folder that is not this recipe's run."""
    if state == "foreign":
        raise RunFolderError(f"{folder.path}: holds files reslab did not write; move them away")
    if state not in ("finished", "partial"):
        return
    saved = _saved_config(folder, state)
    if saved is None:
        raise RunFolderError(
            f"{folder.path}: a finished run without its config; cannot tell its recipe"
        )
    changed = config_changes(saved, run.config)
    if changed:
        raise RunFolderError(
            f"{folder.path}: trained with another recipe (differs in: {', '.join(changed)}); "
            "use another experiment folder, or remove that run"
        )


def train_runs(
    exp: ExperimentFolder,
    runs: Sequence[ExperimentRun],
    *,
    say: Callable[[str], None] = print,
) -> Iterator[tuple[ExperimentRun, TrainMetrics]]:
    """Train every run that is not finished (resuming partial ones); yield each run with its
    metrics, in order. Every existing run is checked against the recipe first."""
    states = {run.name: exp.run(run.name).state() for run in runs}
    for run in runs:
        _check_run(exp.run(run.name), run, states[run.name])
    exp.save_recipe()
    for i, run in enumerate(runs, 1):
        folder, state = exp.run(run.name), states[run.name]
        tag = f"[{i}/{len(runs)}] {run.name}"
        lock = exp.locks.get(run.name)
        if state == "finished":
            say(f"{tag}: finished earlier, skipped")
            metrics = read_metrics(folder.path)
            if not isinstance(metrics, TrainMetrics):
                raise RunFolderError(f"{folder.path}: not a training run's metrics")
            yield run, metrics
            continue
        if state == "partial":
            say(f"{tag}: resuming from its last checkpoint")
            runtime = {"device": run.config.device, "threads": run.config.threads}
            metrics = run_training(resume_config(folder.path, runtime), resume=True, lock=lock)
        else:
            say(f"{tag}: training")
            cfg = TrainConfig.from_dict(
                {**run.config.to_dict(), "out": str(folder.path), "overwrite": state == "started"}
            )
            metrics = run_training(cfg, lock=lock)
        yield run, metrics
