"""An exponential moving average of the weights, used for validation and at the end."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from reslab.training.callback import Callback
from reslab.training.distributed import broadcast_buffers

__all__ = [
    "EMA",
]


class EMA(Callback):
    """An exponential moving average of the weights: ``ema = decay*ema + (1-decay)*w`` after
    every optimizer step; buffers (BN statistics) are copied.

    Validation runs on the averaged weights, and at the end of training they replace the
    model's (``apply_at_end``).

    Args:
        decay: the averaging factor per step.
        warmup: use ``min(decay, (1+t)/(10+t))`` at step t, so early averages are not
            dominated by the random initial weights.
        apply_at_end: copy the averaged weights into the model after ``fit``.
    """

    order = 40

    def __init__(
        self, decay: float = 0.999, warmup: bool = True, apply_at_end: bool = True
    ) -> None:
        self.decay, self.warmup, self.apply_at_end = decay, warmup, apply_at_end
        self.shadow: dict[str, Tensor] | None = None
        self.updates = 0
        self._backup: dict[str, Tensor] | None = None

    def _live(self) -> dict[str, Tensor]:
        return self.learn.model.state_dict()

    def before_fit(self) -> None:
        if self.shadow is None:
            self.shadow = {k: v.detach().clone() for k, v in self._live().items()}
        else:  # loaded from a checkpoint: follow the model's device and layout
            live = self._live()
            self.shadow = {
                k: v.to(live[k].device).clone(memory_format=torch.preserve_format)
                for k, v in self.shadow.items()
            }

    def after_step(self) -> None:
        shadow = self.shadow
        assert shadow is not None  # made by before_fit
        decay = self.decay
        if self.warmup:
            decay = min(decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        with torch.no_grad():
            for k, v in self._live().items():
                if v.is_floating_point():
                    shadow[k].lerp_(v.detach(), 1.0 - decay)
                else:
                    shadow[k].copy_(v)

    def _swap_in(self) -> None:
        self._backup = {k: v.detach().clone() for k, v in self._live().items()}
        self._load_shadow()

    def _load_shadow(self) -> None:
        # Under torchrun the averaged weights agree across processes but the averaged BN
        # statistics do not (each process's come from its own shard): use rank 0's.
        self.learn.model.load_state_dict(self.shadow)
        broadcast_buffers(self.learn.model)

    def _swap_out(self) -> None:
        if self._backup is not None:
            self.learn.model.load_state_dict(self._backup)
            self._backup = None

    def before_validate(self) -> None:
        self._swap_in()

    def after_validate(self) -> None:
        self._swap_out()

    def after_fit(self) -> None:
        if self.apply_at_end and self.shadow is not None:
            self._load_shadow()

    def cleanup_fit(self) -> None:
        self._swap_out()  # never leave the averaged weights in place after an error

    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu().contiguous() for k, v in (self.shadow or {}).items()}
        return {"shadow": shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = dict(state["shadow"]) or None
        self.updates = int(state["updates"])
