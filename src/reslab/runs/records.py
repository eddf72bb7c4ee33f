"""The typed records of a run folder: its config, metrics, history and command log.

Each record is read from one file by one function here, checked field by field (a damaged or
foreign file is a one-line :class:`~reslab.runs.RunFileError` naming the file and the field),
and written by one function here, atomically.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from reslab.files import atomic_write_json, atomic_write_text
from reslab.runs.ledger import claim
from reslab.runs.members import RunFileError, read_json_member
from reslab.runs.names import COMMAND, CONFIG, HISTORY_CSV, HISTORY_JSON, LR_FIND_JSON, METRICS
from reslab.runs.schema import check_fields, expect_object

__all__ = [
    "CommandLog",
    "FinetuneMetrics",
    "History",
    "Invocation",
    "LrFind",
    "RunConfig",
    "RunMetrics",
    "TrainMetrics",
    "append_invocation",
    "read_command_log",
    "read_config",
    "read_history",
    "read_lr_find",
    "read_metrics",
    "write_config",
    "write_history",
    "write_lr_find",
    "write_metrics",
]


@dataclass(frozen=True)
class RunConfig:
    """``config.json``: the options of the recipe that made the run.

    Attributes:
        recipe: ``"train"`` or ``"finetune"`` (a fine-tune names its ``source`` model).
        data, data_dir, classes: where the run's data came from.
        model: the registered model (``reslab train``); source: the pretrained model
            (``reslab finetune``).
        options: every option as stored.
    """

    recipe: str
    data: str
    data_dir: str | None
    classes: list[str] | None
    model: str | None
    source: str | None
    options: dict[str, Any]

    FIELDS: ClassVar = {
        "data": ("str", True), "data_dir": ("str", False), "classes": ("strs", False),
        "model": ("str", False), "source": ("str", False),
    }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path = Path(CONFIG)) -> RunConfig:
        values = check_fields(path, expect_object(path, data), cls.FIELDS)
        recipe = "finetune" if values["source"] is not None else "train"
        return cls(recipe=recipe, options=dict(data), **values)


def read_config(folder: str | Path) -> RunConfig | None:
    """The run's ``config.json`` (None when absent)."""
    value = read_json_member(folder, CONFIG)
    return None if value is None else RunConfig.from_dict(value, Path(folder) / CONFIG)


def write_config(folder: str | Path, options: dict[str, Any]) -> Path:
    """Write the recipe's ``options`` as ``config.json`` (checked like a read)."""
    RunConfig.from_dict(options, Path(folder) / CONFIG)
    return atomic_write_json(claim(Path(folder) / CONFIG), options)


@dataclass(frozen=True)
class RunMetrics:
    """``metrics.json`` of a finished run: the declared fields, typed; ``extra`` keeps the
    keys this version does not declare."""

    FIELDS: ClassVar[dict[str, tuple[str, bool]]] = {}
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_dict(cls: type[_Metrics], data: Any, path: Path = Path(METRICS)) -> _Metrics:
        data = expect_object(path, data)
        values = check_fields(path, data, cls.FIELDS)
        extra = {k: v for k, v in data.items() if k not in cls.FIELDS}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**{k: v for k, v in values.items() if k != "extra"}, **self.extra}


_Metrics = TypeVar("_Metrics", bound=RunMetrics)


@dataclass(frozen=True)
class TrainMetrics(RunMetrics):
    """What ``reslab train`` measured (accuracies and losses on the test split)."""

    test_accuracy: float
    test_loss: float
    test_top5: float | None = None
    epochs: int | None = None
    wall_seconds: float | None = None
    train_seconds: float | None = None
    samples_per_s: float | None = None
    model: str | None = None
    data: str | None = None
    classes: list[str] | None = None
    train_images: int | None = None
    seed: int | None = None
    amp: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    train_path: str | None = None  # how the step ran, e.g. compile+bf16+channels-last
    world_size: int | None = None
    resumed: bool | None = None
    torch: str | None = None
    threads: int | None = None

    FIELDS: ClassVar = {
        "test_accuracy": ("number", True), "test_loss": ("number", True),
        "test_top5": ("number", False), "epochs": ("int", False),
        "wall_seconds": ("number", False), "train_seconds": ("number", False),
        "samples_per_s": ("number", False), "model": ("str", False), "data": ("str", False),
        "classes": ("strs", False), "train_images": ("int", False), "seed": ("int", False),
        "amp": ("str", False), "channels_last": ("bool", False), "compile": ("bool", False),
        "train_path": ("str", False), "world_size": ("int", False),
        "resumed": ("bool", False), "torch": ("str", False), "threads": ("int", False),
    }  # fmt: skip


@dataclass(frozen=True)
class FinetuneMetrics(RunMetrics):
    """What ``reslab finetune`` measured (on the validation split)."""

    valid_accuracy: float
    valid_loss: float
    epoch_seconds: list[float | None] | None = None
    wall_seconds: float | None = None
    train_images: int | None = None
    valid_images: int | None = None
    size: int | None = None
    torch: str | None = None
    threads: int | None = None
    feature_seconds: float | None = None

    FIELDS: ClassVar = {
        "valid_accuracy": ("number", True), "valid_loss": ("number", True),
        "epoch_seconds": ("numbers_or_null", False), "wall_seconds": ("number", False),
        "train_images": ("int", False), "valid_images": ("int", False), "size": ("int", False),
        "torch": ("str", False), "threads": ("int", False), "feature_seconds": ("number", False),
    }  # fmt: skip


def read_metrics(folder: str | Path) -> TrainMetrics | FinetuneMetrics | None:
    """The run's ``metrics.json`` (None when absent): a fine-tune's when it has
    ``valid_accuracy`` and no ``test_accuracy``, else a training run's."""
    path = Path(folder) / METRICS
    value = read_json_member(folder, METRICS)
    if value is None:
        return None
    value = expect_object(path, value)
    if "valid_accuracy" in value and "test_accuracy" not in value:  # a fine-tune's
        return FinetuneMetrics.from_dict(value, path)
    return TrainMetrics.from_dict(value, path)


def write_metrics(folder: str | Path, metrics: RunMetrics) -> Path:
    return atomic_write_json(claim(Path(folder) / METRICS), metrics.to_dict())


@dataclass(frozen=True)
class History:
    """``history.json``: one row per epoch (each with its ``epoch`` number), and the
    per-batch learning rate and training loss."""

    rows: list[dict[str, Any]]
    batch_lr: list[float] = field(default_factory=list)
    batch_loss: list[float] = field(default_factory=list)
    batches_per_epoch: int | None = None

    FIELDS: ClassVar = {
        "batch_lr": ("numbers", False), "batch_loss": ("numbers", False),
        "batches_per_epoch": ("int", False),
    }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: Path = Path(HISTORY_JSON)) -> History:
        data = expect_object(path, data)
        rows = data.get("history")
        if not isinstance(rows, list):
            raise RunFileError(f"{path}: 'history' must be a list of epochs")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise RunFileError(f"{path}: history[{i}] is not an epoch (an object with 'epoch')")
        values = check_fields(path, data, cls.FIELDS)
        per_epoch = values["batches_per_epoch"]
        if per_epoch is not None and per_epoch < 1:
            raise RunFileError(f"{path}: 'batches_per_epoch' must be positive")
        return cls(rows, values["batch_lr"] or [], values["batch_loss"] or [], per_epoch)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"history": self.rows}
        if self.batch_lr or self.batch_loss:
            out.update(batch_lr=self.batch_lr, batch_loss=self.batch_loss)
        if self.batches_per_epoch is not None:
            out["batches_per_epoch"] = self.batches_per_epoch
        return out


def read_history(folder: str | Path) -> History | None:
    """The run's ``history.json`` (None when absent)."""
    value = read_json_member(folder, HISTORY_JSON)
    return None if value is None else History.from_dict(value, Path(folder) / HISTORY_JSON)


def write_history(folder: str | Path, history: History, csv_text: str | None = None) -> None:
    """Write ``history.json`` (and ``history.csv`` when ``csv_text`` is given)."""
    folder = Path(folder)
    if csv_text is not None:
        atomic_write_text(claim(folder / HISTORY_CSV), csv_text)
    atomic_write_json(claim(folder / HISTORY_JSON), history.to_dict(), indent=None)


@dataclass(frozen=True)
class Invocation:
    """One start of a run: the command line, when (UTC), and what ran it."""

    argv: list[str]
    time: str
    reslab: str | None = None
    git_commit: str | None = None
    torch: str | None = None
    device: str | None = None
    world_size: int | None = None

    FIELDS: ClassVar = {
        "argv": ("strs", True), "time": ("str", True), "reslab": ("str", False),
        "git_commit": ("str", False), "torch": ("str", False), "device": ("str", False),
        "world_size": ("int", False),
    }  # fmt: skip


@dataclass(frozen=True)
class CommandLog:
    """``command.json``: every start of the run, oldest first."""

    invocations: list[Invocation]


def read_command_log(folder: str | Path) -> CommandLog | None:
    path = Path(folder) / COMMAND
    value = read_json_member(folder, COMMAND)
    if value is None:
        return None
    calls = expect_object(path, value).get("invocations")
    if not isinstance(calls, list):
        raise RunFileError(f"{path}: 'invocations' must be a list")
    out = []
    for i, call in enumerate(calls):
        where = Path(f"{path} invocations[{i}]")
        out.append(Invocation(**check_fields(where, expect_object(where, call), Invocation.FIELDS)))
    return CommandLog(out)


def append_invocation(folder: str | Path, invocation: Invocation) -> Path:
    """Add ``invocation`` to the run's ``command.json`` (a damaged log is refused, not lost)."""
    log = read_command_log(folder) or CommandLog([])
    calls = [dataclasses.asdict(c) for c in [*log.invocations, invocation]]
    return atomic_write_json(claim(Path(folder) / COMMAND), {"invocations": calls})


@dataclass(frozen=True)
class LrFind:
    """``lr_find.json``: the LR finder's sweep (learning rates, smoothed and raw losses) and
    its suggestion."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float] | None = None
    suggestion: float | None = None

    FIELDS: ClassVar = {
        "lrs": ("numbers", True), "losses": ("numbers", True),
        "raw_losses": ("numbers", False), "suggestion": ("number", False),
    }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, path: Path = Path(LR_FIND_JSON)) -> LrFind:
        values = check_fields(path, expect_object(path, data), cls.FIELDS)
        if len(values["lrs"]) != len(values["losses"]):
            raise RunFileError(f"{path}: 'lrs' and 'losses' differ in length")
        return cls(**values)


def read_lr_find(folder: str | Path) -> LrFind | None:
    value = read_json_member(folder, LR_FIND_JSON)
    return None if value is None else LrFind.from_dict(value, Path(folder) / LR_FIND_JSON)


def write_lr_find(folder: str | Path, record: LrFind) -> Path:
    return atomic_write_json(claim(Path(folder) / LR_FIND_JSON), dataclasses.asdict(record))
