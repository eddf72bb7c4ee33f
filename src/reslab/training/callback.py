"""The callback protocol of the :class:`~reslab.training.Learner` and its control-flow exceptions.

A callback subclasses :class:`Callback` and overrides methods named after events (every event
is declared, as a no-op, on the base class); the Learner calls them in ``order`` (lower
first). ``attach`` fires once, when the callback is added to a Learner; ``cleanup_fit`` fires
after every ``fit``, also one that failed. Training events, in the order they fire::

    before_fit
      before_epoch
        before_train
          before_batch → compute_loss → after_loss → (backward) → before_step → (step)
                       → after_step → after_batch        (repeated for every batch)
        after_train
        before_validate → after_validate
      after_epoch
    after_fit

``compute_loss`` is an override point: a callback that returns ``True`` from it has set
``learn.pred`` and ``learn.loss`` itself, and the default ``model(x)`` + ``loss_func`` is
skipped. State that must survive a resume goes through ``state_dict()`` / ``load_state_dict()``.

An exception raised inside a callback reaches the caller with its type unchanged and its message
prefixed by the callback and the event (``callback EarlyStopping failed in after_epoch: …``,
also kept as its ``reslab_callback``/``reslab_event`` attributes); the control-flow exceptions
below, and :class:`TrainingDiverged`, pass through untouched.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "EVENTS",
    "LIFECYCLE_EVENTS",
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "CancelStepException",
    "TrainingDiverged",
    "handler_table",
]

EVENTS = (
    "before_fit",
    "before_epoch",
    "before_train",
    "before_batch",
    "compute_loss",
    "after_loss",
    "before_step",
    "after_step",
    "after_batch",
    "after_train",
    "before_validate",
    "after_validate",
    "after_epoch",
    "after_fit",
)
LIFECYCLE_EVENTS = ("attach", "cleanup_fit")


class CancelFitException(Exception):
    """Raise from a callback to end training cleanly (``after_fit`` still runs)."""


class CancelEpochException(Exception):
    """Raise to skip the rest of this epoch (``after_epoch`` still runs)."""


class CancelBatchException(Exception):
    """Raise to skip the rest of this batch (``after_batch`` still runs)."""


class CancelStepException(Exception):
    """Raise from ``before_step`` to skip the optimizer step (gradients are kept)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was left untouched."""


def handler_table(cbs: list[Callback]) -> dict[str, tuple[Callback, ...]]:
    """For every event, the callbacks (in list order) that handle it: those whose class (or
    instance) defines the event's method, not the base class's no-op. The Learner fires an
    event on these only, so a batch costs no calls to callbacks that ignore it."""
    table: dict[str, tuple[Callback, ...]] = {}
    for event in EVENTS:
        base = getattr(Callback, event)
        table[event] = tuple(
            cb for cb in cbs if event in vars(cb) or getattr(type(cb), event, base) is not base
        )
    return table


def name_callback_in(err: BaseException, callback: str, event: str) -> None:
    """Prefix ``err``'s message with the callback and event it was raised in (once)."""
    if getattr(err, "reslab_callback", None) is not None:
        return  # raised by a nested dispatch: it already names the innermost callback
    text = str(err.args[0]) if len(err.args) == 1 else (str(err) if err.args else "")
    where = f"callback {callback} failed in {event}"
    err.args = (f"{where}: {text}" if text else f"{where}: {type(err).__name__}",)
    vars(err).update(reslab_callback=callback, reslab_event=event)


# Raised by callbacks on purpose; they pass through the Learner's event dispatch unchanged.
PASS_THROUGH = (
    CancelFitException,
    CancelEpochException,
    CancelBatchException,
    CancelStepException,
    TrainingDiverged,
)


class Callback:
    """Base class: override any event method; ``order`` sorts callbacks (lower runs first).

    ``self.learn`` is set when the callback is added to a Learner.
    """

    order: int = 0
    learn: Any = None

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def attr_name(self) -> str:
        """The Learner attribute that reaches this callback: ``ProgressCallback`` →
        ``progress``, ``EMA`` → ``ema``, ``LRFinder`` → ``lr_finder``."""
        s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", self.name.replace("NaN", "Nan"))
        return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", s).lower().removesuffix("_callback")

    # ---------------------------------------------------------------- events (no-ops here)
    def attach(self) -> None:
        """Added to a Learner (``self.learn`` is set): install hooks such as autocast."""

    def detach(self) -> None:
        """Removed from the Learner (e.g. a ``fit(cbs=...)`` callback after its fit): undo
        what :meth:`attach` installed."""

    def before_fit(self) -> None: ...
    def before_epoch(self) -> None: ...
    def before_train(self) -> None: ...
    def before_batch(self) -> None: ...

    def compute_loss(self) -> bool | None:
        """Return True after setting ``learn.pred`` and ``learn.loss`` to replace the default."""
        return None

    def after_loss(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def after_batch(self) -> None: ...
    def after_train(self) -> None: ...
    def before_validate(self) -> None: ...
    def after_validate(self) -> None: ...
    def after_epoch(self) -> None: ...
    def after_fit(self) -> None: ...

    def cleanup_fit(self) -> None:
        """After every fit, even one that raised: close files and bars, undo temporary swaps."""

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """State to store in a checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{self.name}()"
