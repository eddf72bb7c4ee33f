"""What a run folder records about its run: config, command, metrics, history.

Each file is optional (a run stopped early, or written by another recipe, has fewer of
them); what is missing is shown as missing, never guessed.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reslab.weights import resolve_spec_path

__all__ = ["RunFacts", "collect_run", "read_json"]


def read_json(path: Path) -> Any:
    """A JSON file's value, or None when the file is missing; a one-line error for a
    file that is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


@dataclass
class RunFacts:
    """The recorded facts of one run folder.

    Attributes:
        folder: the run folder.
        model_path: the weights the report analyses (``model.safetensors``, else the
            checkpoint).
        config: ``config.json`` (the recipe's options), ``{}`` if absent.
        metrics: ``metrics.json``, ``{}`` if absent.
        history: per-epoch rows of ``history.json``.
        batch_lr, batch_loss: per-batch learning rate and loss (``history.json``).
        batches_per_epoch: for the per-batch curves' x axis.
        invocations: the starts recorded in ``command.json``.
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


def collect_run(folder: str | Path) -> RunFacts:
    """The facts of the run in ``folder`` (it must hold a model or a checkpoint)."""
    folder = Path(folder)
    model_path = resolve_spec_path(str(folder))
    if model_path is None:
        raise ValueError(f"{folder}: not a run folder")
    facts = RunFacts(folder, model_path)
    facts.config = _mapping(read_json(folder / "config.json"))
    facts.metrics = _mapping(read_json(folder / "metrics.json"))
    history = _mapping(read_json(folder / "history.json"))
    epochs = history.get("history")
    facts.history = [r for r in epochs if isinstance(r, dict)] if isinstance(epochs, list) else []
    facts.batch_lr = _numbers(history.get("batch_lr"))
    facts.batch_loss = _numbers(history.get("batch_loss"))
    per_epoch = history.get("batches_per_epoch")
    facts.batches_per_epoch = per_epoch if isinstance(per_epoch, int) and per_epoch > 0 else None
    command = _mapping(read_json(folder / "command.json"))
    calls = command.get("invocations")
    facts.invocations = [i for i in calls if isinstance(i, dict)] if isinstance(calls, list) else []
    return facts


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _numbers(value: Any) -> list[float]:
    if not isinstance(value, list):
        return []
    return [float(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
