"""The callback protocol of the :class:`~reslab.training.Learner` and its control-flow exceptions.

A callback subclasses :class:`Callback` and defines methods named after events; the Learner
calls them in ``order`` (lower first). Events, in the order they fire::

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
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EVENTS",
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "CancelStepException",
    "TrainingDiverged",
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


class Callback:
    """Base class: override any event method; ``order`` sorts callbacks (lower runs first).

    ``self.learn`` is set when the callback is added to a Learner.
    """

    order: int = 0
    learn: Any = None

    @property
    def name(self) -> str:
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """State to store in a checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        return f"{self.name}()"
