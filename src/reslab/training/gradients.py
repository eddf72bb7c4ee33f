"""Gradient handling: accumulation over several batches, and norm clipping."""

from __future__ import annotations

from typing import Any

import torch

from reslab.training.callback import Callback, CancelStepException

__all__ = [
    "GradientAccumulation",
    "GradientClip",
]


class GradientAccumulation(Callback):
    """Step the optimizer every ``steps`` batches, each batch's loss divided by ``steps``:
    the gradient of an effective batch ``steps`` times larger than fits in memory.

    BatchNorm statistics still come from each (smaller) batch. A last short group at the
    end of an epoch is stepped too, its losses divided by its own size (the mean gradient of
    the batches it has), so no gradient carries into the next epoch.
    """

    order = -30

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError(f"accumulation steps must be >= 1, got {steps}")
        self.steps = steps
        self.count = 0

    def before_epoch(self) -> None:
        if not (self.learn.epoch == self.learn.start_epoch and self.learn.start_iter > 0):
            self.count = 0

    def after_loss(self) -> None:
        learn = self.learn
        if learn.training and self.steps > 1:
            group_start = learn.iter - self.count  # count: batches already in this group
            size = min(self.steps, learn.n_iter - group_start)
            learn.loss_grad = learn.loss_grad / size

    def before_step(self) -> None:
        self.count += 1
        last = self.learn.iter == self.learn.n_iter - 1
        if self.count % self.steps != 0 and not last:
            raise CancelStepException
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])


class GradientClip(Callback):
    """Clip the global gradient norm to ``max_norm`` before every optimizer step.

    ``last_norm`` is the norm before the last clip; it is kept on the device and read only
    when asked for.
    """

    order = 0

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = max_norm
        self._last_norm: torch.Tensor | None = None

    @property
    def last_norm(self) -> float | None:
        return None if self._last_norm is None else float(self._last_norm)

    def before_step(self) -> None:
        params = [p for p in self.learn.model.parameters() if p.grad is not None]
        self._last_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm).detach()
