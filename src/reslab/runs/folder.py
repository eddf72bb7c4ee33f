"""A run folder as one object: its state, its single-writer lock, the policy for a folder that
already holds something, and the start of a run (the only place old files are removed)."""

from __future__ import annotations

import os
from pathlib import Path

from reslab.files import FolderLock, is_temp_file
from reslab.runs.ledger import read_ledger, remove_ledger_files, start_ledger
from reslab.runs.members import existing_member
from reslab.runs.names import (
    CHECKPOINT,
    LEDGER,
    LOCK,
    METRICS,
    MODEL,
    MODEL_FILES,
    is_record,
)

__all__ = ["EXISTING", "RunFolder", "RunFolderError", "run_inputs"]

# What to do with a run folder that already holds something: refuse (a new run), continue it
# (resume), or replace the previous run (overwrite: only a reslab run, only its own files).
EXISTING = ("refuse", "resume", "overwrite")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds a run, no run to resume, or
    something that is not a reslab run)."""


class RunFolder:
    """The run folder at ``path`` (it may not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def has(self, name: str) -> bool:
        """Whether the folder holds the regular file ``name`` (checked: inside the folder)."""
        return existing_member(self.path, name) is not None

    def entries(self) -> list[Path]:
        """What the folder holds, but for its lock and killed writers' temporary files."""
        if not self.path.is_dir():
            return []
        return [p for p in self.path.iterdir() if p.name != LOCK and not is_temp_file(p)]

    def model_file(self) -> Path | None:
        """The weights a command reads from the run: the final model, else the checkpoint."""
        for name in MODEL_FILES:
            path = existing_member(self.path, name)
            if path is not None:
                return path
        return None

    def state(self) -> str:
        """``finished`` (final model and metrics), ``partial`` (a checkpoint to resume),
        ``started`` (reslab's ledger, nothing to resume), ``empty`` or ``foreign``
        (something reslab did not start)."""
        if self.has(METRICS) and self.has(MODEL):
            return "finished"
        if self.has(CHECKPOINT):
            return "partial"
        if read_ledger(self.path) is not None:
            return "started"
        return "foreign" if self.entries() else "empty"

    def lock(self) -> FolderLock:
        """Take the folder's single-writer lock (created with the folder); refused at once
        when another process holds it."""
        return FolderLock(self.path)

    def check_existing(self, existing: str) -> None:
        """Apply the ``existing`` policy before any work (call it holding the lock): refuse a
        used folder, resume only a checkpoint, overwrite only a reslab run."""
        if existing not in EXISTING:
            raise ValueError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
        entries = self.entries()
        ours = read_ledger(self.path) is not None
        if existing == "resume":
            if not self.has(CHECKPOINT):
                raise RunFolderError(f"{self.path}: no {CHECKPOINT} to resume from")
        elif existing == "overwrite":
            if entries and not ours:
                raise RunFolderError(
                    f"{self.path}: not a reslab run folder (no {LEDGER}: written by hand or by "
                    "an older reslab); --overwrite replaces only runs reslab recorded: remove "
                    "it yourself or use another --out"
                )
        elif entries:
            hints = ["use --resume to continue it"] if self.has(CHECKPOINT) else []
            hints += ["--overwrite to replace it"] if ours else ["use another --out"]
            what = "a previous run" if ours else "files reslab did not record"
            raise RunFolderError(
                f"{self.path}: holds {what} ({len(entries)} entries); {' or '.join(hints)}"
            )

    def begin(self, recipe: str, existing: str) -> None:
        """Start writing the run: with ``overwrite`` remove the previous run's files (those
        its ledger lists, nothing else), then start a ledger (a resumed run keeps its own)."""
        if existing == "overwrite":
            remove_ledger_files(self.path)
        if existing != "resume" or read_ledger(self.path) is None:
            start_ledger(self.path, recipe)


def run_inputs(spec: str | Path) -> list[Path]:
    """The files a command reads when given ``spec``: a run folder's own records (weights,
    checkpoint and its state, config, metrics, history, command log, ledger), or the file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return [p for p in path.iterdir() if is_record(p.name) and os.path.lexists(p)]
    return [path] if os.path.lexists(path) else []
