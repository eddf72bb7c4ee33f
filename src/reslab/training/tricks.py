"""Training features as callbacks: mixed precision, channels-last, gradient accumulation,
gradient clipping and an exponential moving average of the weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from reslab.training.callback import Callback, CancelStepException

__all__ = ["EMA", "ChannelsLast", "GradientAccumulation", "GradientClip", "MixedPrecision"]


class MixedPrecision(Callback):
    """Autocast the forward pass to bf16 (CPU or CUDA) or fp16 with a GradScaler.

    bf16 keeps fp32's exponent range, so it needs no loss scaling; fp16 does: the loss is
    scaled up before backward so small gradients do not flush to zero, gradients are unscaled
    before clipping, and steps with inf/NaN gradients are skipped by the scaler.

    Args:
        dtype: ``"bf16"`` or ``"fp16"`` (or the torch dtype).
    """

    order = -10

    def __init__(self, dtype: str | torch.dtype = "bf16") -> None:
        names = {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp16": torch.float16,
            "float16": torch.float16,
        }
        if isinstance(dtype, str):
            if dtype not in names:
                raise ValueError(f"unknown AMP dtype {dtype!r}; expected bf16 or fp16")
            dtype = names[dtype]
        self.dtype = dtype
        self.scaler: torch.amp.GradScaler | None = None
        self._scaler_state: dict | None = None

    def attach(self) -> None:
        learn = self.learn
        device_type = learn.device.type
        learn.autocast = lambda: torch.autocast(device_type, dtype=self.dtype)
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(device_type)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
            learn.opt_step = self._scaled_step

    def _scaled_step(self) -> None:
        self.scaler.step(self.learn.opt)
        self.scaler.update()

    def after_loss(self) -> None:
        if self.scaler is not None and self.learn.training:
            self.learn.loss_grad = self.scaler.scale(self.learn.loss_grad)

    def before_step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.learn.opt)  # true gradients for clipping

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "scaler" in state:
            self._scaler_state = state["scaler"]
            if self.scaler is not None:
                self.scaler.load_state_dict(state["scaler"])


class ChannelsLast(Callback):
    """Store the model and every input batch in channels-last (NHWC) memory format.

    oneDNN (CPU) and cuDNN (tensor cores) run NHWC convolutions faster, most of all under
    bf16/fp16 autocast.
    """

    def attach(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last)
        self.learn.input_transforms.append(_to_channels_last)


def _to_channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class GradientAccumulation(Callback):
    """Step the optimizer every ``steps`` batches, each batch's loss divided by ``steps``:
    the gradient of an effective batch ``steps`` times larger than fits in memory.

    BatchNorm statistics still come from each (smaller) batch. A last short group at the
    end of an epoch is stepped too, so no gradient carries into the next epoch.
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
        if self.learn.training and self.steps > 1:
            self.learn.loss_grad = self.learn.loss_grad / self.steps

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
    """Clip the global gradient norm to ``max_norm`` before every optimizer step."""

    order = 0

    def __init__(self, max_norm: float = 1.0) -> None:
        self.max_norm = max_norm

    def before_step(self) -> None:
        params = [p for p in self.learn.model.parameters() if p.grad is not None]
        self.last_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_norm))


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

    def __init__(self, decay: float = 0.999, warmup: bool = True, apply_at_end: bool = True):
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
        decay = self.decay
        if self.warmup:
            decay = min(decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        with torch.no_grad():
            for k, v in self._live().items():
                if v.is_floating_point():
                    self.shadow[k].lerp_(v.detach(), 1.0 - decay)
                else:
                    self.shadow[k].copy_(v)

    def _swap_in(self) -> None:
        self._backup = {k: v.detach().clone() for k, v in self._live().items()}
        self.learn.model.load_state_dict(self.shadow)

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
            self.learn.model.load_state_dict(self.shadow)

    def cleanup_fit(self) -> None:
        self._swap_out()  # never leave the averaged weights in place after an error

    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu().contiguous() for k, v in (self.shadow or {}).items()}
        return {"shadow": shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow = dict(state["shadow"]) or None
        self.updates = int(state["updates"])
