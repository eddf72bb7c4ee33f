"""What a run folder records about its run: config, command, metrics, history.

Each record is read through :mod:`reslab.runs` (typed and checked) and is optional (a run
stopped early, or written by another recipe, has fewer of them): what is missing is shown as
missing, what is damaged is shown as a problem naming the file, never guessed.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reslab.runs import (
    RunFileError,
    RunFolder,
    names,
    read_command_log,
    read_config,
    read_history,
    read_metrics,
)

__all__ = ["RunFacts", "collect_run"]

T = TypeVar("T")


@dataclass
class RunFacts:
    """The recorded facts of one run folder.

    Attributes:
        folder: the run folder.
        model_path: the weights the report analyses (the final model, else the checkpoint).
        config: the recipe's options (``{}`` if absent).
        metrics: the final metrics (``{}`` if absent).
        history: per-epoch rows.
        batch_lr, batch_loss: per-batch learning rate and loss.
        batches_per_epoch: for the per-batch curves' x axis.
        invocations: the recorded starts (``argv``, ``time``, versions, device).
        problems: one line per damaged record (it is left out of the page).
    """

    folder: Path
    model_path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    batch_lr: list[float] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)
    batches_per_epoch: int | None = None
    invocations: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def recipe(self) -> str:
        """``"finetune"`` when the config names a source model, else ``"train"``."""
        return "finetune" if "source" in self.config else "train"

    @property
    def title(self) -> str:
        model = self.metrics.get("model") or self.config.get("model") or self.config.get("source")
        data = self.metrics.get("data") or self.config.get("data")
        if model and data:
            return f"{model} on {Path(str(data)).name or data}"
        return self.folder.resolve().name

    def commands(self) -> list[str]:
        """Each recorded command line, shell-quoted."""
        return [shlex.join(str(a) for a in inv.get("argv", [])) for inv in self.invocations]


def _read(facts: RunFacts, read: Callable[[Path], T | None]) -> T | None:
    try:
        return read(facts.folder)
    except RunFileError as err:
        facts.problems.append(str(err))
        return None


def collect_run(folder: str | Path) -> RunFacts:
    """The facts of the run in ``folder`` (it must hold a model or a checkpoint)."""
    folder = Path(folder)
    model_path = RunFolder(folder).model_file()
    if model_path is None:
        raise ValueError(f"{folder}: not a run folder (no {' or '.join(names.MODEL_FILES)})")
    facts = RunFacts(folder, model_path)
    config = _read(facts, read_config)
    facts.config = config.options if config is not None else {}
    metrics = _read(facts, read_metrics)
    facts.metrics = metrics.to_dict() if metrics is not None else {}
    history = _read(facts, read_history)
    if history is not None:
        facts.history = history.rows
        facts.batch_lr, facts.batch_loss = history.batch_lr, history.batch_loss
        facts.batches_per_epoch = history.batches_per_epoch
    log = _read(facts, read_command_log)
    if log is not None:
        facts.invocations = [vars(call) for call in log.invocations]
    return facts
