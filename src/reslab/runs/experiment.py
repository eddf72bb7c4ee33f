"""An experiment folder: one recipe (``recipe.json``) shared by every run under ``runs/``,
the experiment's results and its manifest.

The folder and each run folder have their single-writer locks; an experiment holds all of
them while it runs, so no other command writes into one of its runs meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reslab.files import FolderLock, atomic_write_json, check_output_dir, sweep_temp_files
from reslab.runs.folder import RunFolder, RunFolderError
from reslab.runs.members import read_json_member
from reslab.runs.names import RECIPE, RESULTS_JSON, RUNS_DIR
from reslab.runs.schema import expect_object

__all__ = [
    "ExperimentFolder",
    "read_recipe",
    "read_results",
    "recipe_changes",
    "write_results_json",
]


def read_recipe(folder: str | Path) -> dict[str, Any] | None:
    """The experiment's ``recipe.json`` (a JSON object), or None when absent."""
    value = read_json_member(folder, RECIPE)
    return None if value is None else expect_object(Path(folder) / RECIPE, value)


def recipe_changes(saved: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two recipes, sorted."""
    return sorted(k for k in set(saved) | set(recipe) if saved.get(k) != recipe.get(k))


def read_results(folder: str | Path) -> Any | None:
    """The experiment's ``results.json`` (None when absent)."""
    return read_json_member(folder, RESULTS_JSON)


def write_results_json(folder: str | Path, results: Any) -> Path:
    return atomic_write_json(Path(folder) / RESULTS_JSON, results)


class ExperimentFolder:
    """The experiment folder at ``path``: use it as ``with ExperimentFolder(path, recipe,
    run_names) as exp:`` to hold its lock and its runs' locks, with the recipe checked."""

    def __init__(self, path: str | Path, recipe: dict[str, Any], run_names: list[str]) -> None:
        self.path = check_output_dir(path)
        self.recipe = recipe
        self.run_names = list(run_names)
        self.locks: dict[str, FolderLock] = {}

    def run(self, name: str) -> RunFolder:
        """The run folder of the run ``name``."""
        return RunFolder(self.path / RUNS_DIR / name)

    def existing_runs(self) -> list[str]:
        """The run folders already under ``runs/`` that hold something."""
        runs = self.path / RUNS_DIR
        if not runs.is_dir():
            return []
        return sorted(p.name for p in runs.iterdir() if p.is_dir() and RunFolder(p).entries())

    def _check_recipe(self) -> None:
        saved = read_recipe(self.path)
        if saved is None:
            return  # stored by save_recipe() once the runs here are known to be this recipe's
        changed = recipe_changes(saved, self.recipe)
        if changed:
            raise RunFolderError(
                f"{self.path} holds an experiment with another recipe (changed: "
                f"{', '.join(changed)}); use another folder, or the same options to continue it"
            )

    def save_recipe(self) -> Path:
        """Store the recipe (call it once the runs already here were checked against it: a
        folder whose recipe file is gone is rebuilt from its runs, never relabelled)."""
        return atomic_write_json(self.path / RECIPE, self.recipe)

    def __enter__(self) -> ExperimentFolder:
        self.locks["."] = FolderLock(self.path)
        try:
            sweep_temp_files(self.path)
            self._check_recipe()
            for name in self.run_names:
                run = self.run(name)
                self.locks[name] = run.lock()
                sweep_temp_files(run.path)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(list(self.locks.values())):
            lock.release()
        self.locks.clear()

    def __exit__(self, *exc: object) -> None:
        self.release()
