"""Evaluating on more data than the validation set after every epoch."""

from __future__ import annotations

from collections.abc import Iterable

from reslab.training.callback import Callback

__all__ = ["ExtraValidation"]


class ExtraValidation(Callback):
    """After each validation, evaluate the model on ``loader`` too (eval mode, no gradients)
    and record ``{prefix}_loss`` and ``{prefix}_<metric>`` in the epoch's history row.

    The residual-network paper's "training error" is this on (a fixed subset of) the training
    images with no augmentation: ``ExtraValidation(train_eval_loader, "train_eval")``. It runs
    before :class:`~reslab.training.EMA` swaps its averaged weights out, so it measures the
    same weights as the validation.
    """

    order = 35  # after_validate: before EMA (40) restores the live weights

    def __init__(self, loader: Iterable, prefix: str) -> None:
        self.loader, self.prefix = loader, prefix

    def after_validate(self) -> None:
        results = self.learn.validate(self.loader)
        self.learn.valid_results.update(
            {f"{self.prefix}_{key.removeprefix('valid_')}": v for key, v in results.items()}
        )
