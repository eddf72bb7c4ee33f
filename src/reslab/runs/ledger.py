"""``run.json``, the ledger of a run folder: which recipe made the run and every file reslab
wrote there.

The ledger is what makes a folder a reslab run folder (file names alone do not: a user's
project folder may hold a ``config.json`` too). ``--overwrite`` removes exactly the files it
lists and nothing else. A name is added *before* its file is written (:func:`claim`), so a
kill between the two leaves at worst a listed file that does not exist.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from reslab.files import atomic_write_json
from reslab.runs.members import RunFileError, read_json_member
from reslab.runs.names import LEDGER, LOCK, TENSORBOARD
from reslab.runs.schema import check_fields, expect_object

__all__ = ["LEDGER_FORMAT", "Ledger", "claim", "read_ledger", "remove_ledger_files", "start_ledger"]

LEDGER_FORMAT = "reslab-run"
LEDGER_VERSION = 1
RECIPES = ("train", "finetune")
TENSORBOARD_PREFIX = "events.out.tfevents."  # the event files TensorBoard's writer names


@dataclass(frozen=True)
class Ledger:
    """The recipe that made the run and the names reslab wrote in its folder."""

    recipe: str
    files: tuple[str, ...]


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\0" not in name
    )


def read_ledger(folder: str | Path) -> Ledger | None:
    """The folder's ledger; None when there is none (not a reslab run folder)."""
    path = Path(folder) / LEDGER
    value = read_json_member(folder, LEDGER)
    if value is None:
        return None
    data = expect_object(path, value)
    if data.get("format") != LEDGER_FORMAT:
        raise RunFileError(f"{path}: not a reslab run ledger (format {data.get('format')!r})")
    if data.get("version") != LEDGER_VERSION:
        raise RunFileError(f"{path}: version {data.get('version')!r}; this reslab reads 1")
    fields = {"recipe": ("str", True), "files": ("strs", True)}
    values = check_fields(path, data, fields)
    if values["recipe"] not in RECIPES:
        raise RunFileError(f"{path}: unknown recipe {values['recipe']!r}")
    bad = [n for n in values["files"] if not _plain_name(n)]
    if bad:
        raise RunFileError(f"{path}: {bad[0]!r} is not a file name of this folder")
    return Ledger(values["recipe"], tuple(values["files"]))


def _write(folder: Path, ledger: Ledger) -> None:
    value = {"format": LEDGER_FORMAT, "version": LEDGER_VERSION, "recipe": ledger.recipe,
             "files": list(ledger.files)}  # fmt: skip
    atomic_write_json(folder / LEDGER, value)


def start_ledger(folder: str | Path, recipe: str) -> Ledger:
    """A new ledger for a run of ``recipe`` starting in ``folder`` (listing itself)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    ledger = Ledger(recipe, (LEDGER,))
    _write(Path(folder), ledger)
    return ledger


def claim(path: str | Path) -> Path:
    """Record ``path``'s name in its folder's ledger when that folder is a run folder (no-op
    elsewhere); return ``path``. Call it before writing the file."""
    path = Path(path)
    ledger = read_ledger(path.parent)
    if ledger is not None and path.name not in ledger.files:
        if not _plain_name(path.name):
            raise ValueError(f"{path}: not a file name")
        _write(path.parent, Ledger(ledger.recipe, (*ledger.files, path.name)))
    return path


def remove_ledger_files(folder: str | Path) -> list[Path]:
    """Delete what the ledger lists (the ledger last); return what was removed.

    Regular files and links are removed (a link, never its target); of the TensorBoard
    folder only its event files, then the folder if that left it empty; anything else (a
    device, a FIFO, another folder) is left alone.
    """
    folder = Path(folder)
    ledger = read_ledger(folder)
    if ledger is None:
        return []
    removed = []
    for name in sorted(ledger.files, key=lambda n: n == LEDGER):
        path = folder / name
        if name == LOCK or not os.path.lexists(path):
            continue
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            path.unlink()
            removed.append(path)
        elif stat.S_ISDIR(mode) and name == TENSORBOARD:
            removed += _remove_event_files(path)
    return removed


def _remove_event_files(folder: Path) -> list[Path]:
    removed = []
    for entry in folder.iterdir():
        if entry.name.startswith(TENSORBOARD_PREFIX) and stat.S_ISREG(os.lstat(entry).st_mode):
            entry.unlink()
            removed.append(entry)
    if not any(folder.iterdir()):
        folder.rmdir()
        removed.append(folder)
    return removed
