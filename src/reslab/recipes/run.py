"""The skeleton every recipe shares: threads, processes, device, seed, one writer per run
folder, atomic outputs and the clock.

``with open_run(out, seed=…, device=…) as run:`` sets the process up the same way for
``reslab train``, ``reslab finetune`` and the experiments, and gives them one place to write
files: only the main process writes, every file atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reslab.files import (
    FolderLock,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    is_temp_file,
    sweep_temp_files,
)
from reslab.training import (
    CHECKPOINT_NAME,
    DistContext,
    init_distributed,
    read_checkpoint_meta,
)
from reslab.version import __version__, git_commit

__all__ = [
    "COMMAND_FILE",
    "EXISTING",
    "RUN_FILES",
    "RunFolderError",
    "Run",
    "open_run",
    "prepare_run_folder",
    "record_command",
    "seed_everything",
    "set_kernel_policy",
]

# What to do with a run folder that already holds a run: refuse (a new run), continue it
# (resume), or replace the previous run's files (overwrite).
EXISTING = ("refuse", "resume", "overwrite")
# The files (glob patterns) reslab runs write; --overwrite removes these and nothing else.
RUN_FILES = (
    "config.json", "metrics.json", "history.csv", "history.json", "curves.png",
    "lr_find.json", "lr_find.png", "model.safetensors", "checkpoint.safetensors",
    "checkpoint.train_state-*.pt", "confusion.png", "report.html", "top_losses.png",
    "top_losses.json", "tensorboard", "command.json",
)  # fmt: skip
IGNORED = (".lock", "command.json")  # a folder holding only these has no run in it


def saved_run_config(
    run_dir: str | Path,
    key: str,
    changes: dict[str, Any] | None,
    runtime: tuple[str, ...],
) -> dict[str, Any]:
    """The config a recipe stored under ``key`` in the checkpoint of ``run_dir``, with the
    ``runtime`` options among ``changes`` applied (speed and display); any other change is
    refused: a resume continues the same run."""
    run = Path(run_dir)
    ckpt = run / CHECKPOINT_NAME if run.is_dir() else run
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT_NAME} to resume from")
    saved = read_checkpoint_meta(ckpt).get(key)
    if not saved:
        raise ValueError(f"{ckpt}: not written by this command (no {key})")
    changes = {k: v for k, v in (changes or {}).items() if v is not None and k != "out"}
    changed = sorted(
        k for k, v in changes.items() if k not in runtime and k in saved and saved[k] != v
    )
    if changed:
        raise ValueError(f"--resume continues the saved run; cannot change: {', '.join(changed)}")
    merged = {**saved, **{k: v for k, v in changes.items() if k in runtime}}
    return {**merged, "out": str(ckpt.parent)}


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (it holds a run, or no run to resume)."""


def prepare_run_folder(folder: Path, existing: str) -> None:
    """Apply the ``existing`` policy to ``folder`` (call it while holding its lock).

    ``refuse``: the folder must be empty (a new run never mixes with an old one);
    ``resume``: it must hold a checkpoint; ``overwrite``: the previous run's files are removed
    (only reslab's own run files: anything else in the folder is left alone).
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
    entries = [p for p in folder.iterdir() if p.name not in IGNORED and not is_temp_file(p)]
    if existing == "resume":
        if not (folder / "checkpoint.safetensors").is_file():
            raise RunFolderError(f"{folder}: no checkpoint.safetensors to resume from")
    elif existing == "overwrite":
        for pattern in RUN_FILES:
            for path in folder.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif entries:
        resumable = (folder / "checkpoint.safetensors").is_file()  # else --resume cannot help
        raise RunFolderError(
            f"{folder}: holds a previous run ({len(entries)} entries); "
            + ("use --resume to continue it or " if resumable else "use another --out or ")
            + "--overwrite to replace it"
        )


COMMAND_FILE = "command.json"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_kernel_policy(deterministic: bool, device: torch.device) -> None:
    """cuDNN autotuning (fixed input sizes: pick the fastest kernels) unless reproducibility
    was asked for; then deterministic kernels only (CPU kernels are deterministic already)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def record_command(folder: Path, dist: DistContext) -> Path:
    """Append how this process was started to ``folder/command.json`` (``{"invocations":
    [...]}``, one entry per start, so a resumed run keeps its history): the command line,
    the time (UTC), reslab's version and git commit, torch, the device and process count."""
    path = folder / COMMAND_FILE
    try:
        invocations = json.loads(path.read_text())["invocations"]
        invocations = invocations if isinstance(invocations, list) else []
    except (OSError, ValueError, KeyError, TypeError):
        invocations = []
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    # `python -m pkg` puts pkg/__main__.py in argv[0]; a script or entry point its path.
    argv = (
        ["python", "-m", started.parent.name] if started.name == "__main__.py" else [started.name]
    )
    entry = {
        "argv": argv + sys.argv[1:],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reslab": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "device": str(dist.device),
        "world_size": dist.world_size,
    }
    return atomic_write_json(path, {"invocations": [*invocations, entry]})


@dataclass
class Run:
    """One run of a recipe: its folder, its processes and device, and its clock.

    Attributes:
        out: the run folder (None: a run that writes nothing).
        dist: rank, world size and device (``torchrun`` or a single process).
        started: ``time.perf_counter()`` when the run opened.
    """

    out: Path | None
    dist: DistContext
    started: float = field(default_factory=time.perf_counter)

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def seconds(self) -> float:
        """Wall-clock seconds since the run opened."""
        return time.perf_counter() - self.started

    def path(self, name: str) -> Path:
        if self.out is None:
            raise ValueError("this run has no output folder")
        return self.out / name

    def write_json(self, name: str, value: Any) -> Path | None:
        """Write ``value`` as ``out/name`` (main process only, atomically)."""
        return atomic_write_json(self.path(name), value) if self.writes else None

    def write_text(self, name: str, text: str) -> Path | None:
        return atomic_write_text(self.path(name), text) if self.writes else None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files."""
        return self.out is not None and self.is_main


@contextlib.contextmanager
def open_run(
    out: str | Path | None,
    *,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    deterministic: bool = False,
    existing: str = "refuse",
) -> Iterator[Run]:
    """Set the process up for a run and hold its folder's single-writer lock.

    Args:
        out: the run folder (created); None for a run that writes no files.
        seed: seeds every generator.
        device: ``cpu`` or ``cuda`` (default: CUDA when available; under torchrun, one per
            process).
        threads: torch CPU threads.
        deterministic: deterministic CUDA kernels instead of autotuned ones.
        existing: ``refuse`` a folder that holds a run, ``resume`` it, or ``overwrite`` it
            (see :func:`prepare_run_folder`).

    The folder's lock is taken first (a second writer is refused at once), then temporary
    files a killed writer left there are removed and the command line is recorded
    (:func:`record_command`), before any data or model is loaded.
    """
    if out is not None:
        check_output_dir(out)
    if threads:
        torch.set_num_threads(threads)
    dist = init_distributed(device)
    lock = None
    folder = Path(out) if out is not None else None
    if folder is not None and dist.is_main:
        lock = FolderLock(folder)
        try:
            sweep_temp_files(folder)
            prepare_run_folder(folder, existing)
        except BaseException:
            lock.release()
            raise
    try:
        if lock is not None:
            record_command(folder, dist)
        seed_everything(seed)
        set_kernel_policy(deterministic, dist.device)
        yield Run(folder, dist)
    finally:
        if lock is not None:
            lock.release()
