"""The skeleton every recipe shares: threads, processes, device, seed, one writer per run
folder, atomic outputs and the clock.

``with open_run(out, seed=…, device=…) as run:`` sets the process up the same way for
``reslab train``, ``reslab finetune`` and the experiments, and gives them one place to write
files: only the main process writes, every file atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reslab.files import FolderLock, check_output_dir, sweep_temp_files
from reslab.runs import (
    EXISTING,
    Invocation,
    RunFolder,
    RunFolderError,
    append_invocation,
    claim,
    names,
    write_config,
)
from reslab.training import (
    DistContext,
    host_memory_policy,
    init_distributed,
    keep_freed_host_memory,
    read_checkpoint_meta,
)
from reslab.version import __version__, git_commit

__all__ = [
    "EXISTING",
    "RunFolderError",
    "Run",
    "open_run",
    "record_command",
    "seed_everything",
    "set_kernel_policy",
]


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
    ckpt = run / names.CHECKPOINT if run.is_dir() else run
    if not ckpt.is_file():
        raise FileNotFoundError(f"{run_dir}: no {names.CHECKPOINT} to resume from")
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
    """Append how this process was started to the run's command log (one entry per start, so
    a resumed run keeps its history): the command line, the time (UTC), reslab's version and
    git commit, torch, the device and process count."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    # `python -m pkg` puts pkg/__main__.py in argv[0]; a script or entry point its path.
    argv = (
        ["python", "-m", started.parent.name] if started.name == "__main__.py" else [started.name]
    )
    entry = Invocation(
        argv=argv + sys.argv[1:],
        time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        reslab=__version__,
        git_commit=git_commit(),
        torch=torch.__version__,
        device=str(dist.device),
        world_size=dist.world_size,
    )
    return append_invocation(folder, entry)


@dataclass
class Run:
    """One run of a recipe: its folder, its processes and device, and its clock.

    Attributes:
        out: the run folder (None: a run that writes nothing).
        dist: rank, world size and device (``torchrun`` or a single process).
        recipe: ``train`` or ``finetune`` (recorded in the folder's ledger).
        existing: the policy the folder was opened with (``refuse``, ``resume``,
            ``overwrite``).
        started: ``time.perf_counter()`` when the run opened.
    """

    out: Path | None
    dist: DistContext
    recipe: str = "train"
    existing: str = "refuse"
    started: float = field(default_factory=time.perf_counter)
    begun: bool = False

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def seconds(self) -> float:
        """Wall-clock seconds since the run opened."""
        return time.perf_counter() - self.started

    @property
    def folder(self) -> Path:
        """The run folder (a ValueError for a run that writes no files)."""
        if self.out is None:
            raise ValueError("this run has no output folder")
        return self.out

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files."""
        return self.out is not None and self.is_main

    def begin(self) -> Run:
        """Start writing: call it once every input has been checked (data found, model built,
        weights loaded). Only now does ``overwrite`` remove the previous run's files (those
        its ledger lists), and the command line is recorded: a failed start leaves the old
        run whole."""
        if self.writes and not self.begun:
            RunFolder(self.folder).begin(self.recipe, self.existing)
            record_command(self.folder, self.dist)
        self.begun = True
        return self

    def output(self, name: str) -> Path:
        """``out/name``, claimed in the run's ledger (the file reslab is about to write)."""
        out = self.folder
        if not self.begun:
            raise RuntimeError("Run.begin() must come before the run's first file")
        return claim(out / name) if self.writes else out / name

    def write_config(self, options: dict[str, Any]) -> Path | None:
        """The recipe's options as the run's ``config.json`` (main process only)."""
        self.output(names.CONFIG)
        return write_config(self.folder, options) if self.writes else None


@contextlib.contextmanager
def open_run(
    out: str | Path | None,
    *,
    seed: int = 0,
    device: str | None = None,
    threads: int | None = None,
    deterministic: bool = False,
    existing: str = "refuse",
    recipe: str = "train",
    lock: FolderLock | None = None,
) -> Iterator[Run]:
    """Set the process up for a run and hold its folder's single-writer lock.

    Args:
        out: the run folder (created); None for a run that writes no files.
        seed: seeds every generator.
        device: ``cpu`` or ``cuda`` (default: CUDA when available; under torchrun, one per
            process).
        threads: torch CPU threads.
        deterministic: deterministic CUDA kernels instead of autotuned ones.
        existing: ``refuse`` a folder that holds anything, ``resume`` its checkpoint, or
            ``overwrite`` a reslab run (:meth:`reslab.runs.RunFolder.check_existing`).
        recipe: what kind of run this is (``train``, ``finetune``).
        lock: the folder's lock when the caller already holds it (an experiment holds its
            runs' locks); it is not released here.

    The folder's lock is taken first (a second writer is refused at once), temporary files a
    killed writer left there are removed and the ``existing`` policy is checked, before any
    data or model is loaded. Nothing is removed or recorded until :meth:`Run.begin`.
    """
    if out is not None:
        check_output_dir(out)
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
    host_memory_policy()  # refuse a bad $RESLAB_HOST_MEMORY on every device, before any setup
    if threads:
        torch.set_num_threads(threads)
    dist = init_distributed(device)
    if dist.device.type == "cpu":
        keep_freed_host_memory()  # no page faults for each step's activations
    owned = None
    folder = Path(out) if out is not None else None
    if folder is not None and dist.is_main:
        owned = None if lock is not None else RunFolder(folder).lock()
        try:
            sweep_temp_files(folder)
            RunFolder(folder).check_existing(existing)
        except BaseException:
            if owned is not None:
                owned.release()
            raise
    try:
        seed_everything(seed)
        set_kernel_policy(deterministic, dist.device)
        yield Run(folder, dist, recipe, existing)
    finally:
        if owned is not None:
            owned.release()
