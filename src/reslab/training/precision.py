"""Mixed precision: bf16 or fp16 autocast (fp16 with loss scaling)."""

from __future__ import annotations

from typing import Any

import torch

from reslab.training.callback import Callback

__all__ = [
    "MixedPrecision",
    "bf16_is_fast",
]


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
        self._replaced: tuple | None = None  # the Learner's hooks that attach replaced

    def attach(self) -> None:
        learn = self.learn
        self._replaced = (learn.autocast, learn.opt_step)
        device_type = learn.device.type
        learn.autocast = lambda: torch.autocast(device_type, dtype=self.dtype)
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(device_type)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
            learn.opt_step = self._scaled_step

    def detach(self) -> None:
        # Put back plain precision; the scaler's state waits for a later attach.
        if self._replaced is not None:
            self.learn.autocast, self.learn.opt_step = self._replaced
        if self.scaler is not None:
            self._scaler_state = self.scaler.state_dict()
            self.scaler = None

    def _scaled_step(self) -> None:
        scaler = self.scaler
        assert scaler is not None  # attach() installs this step together with the scaler
        scaler.step(self.learn.opt)
        scaler.update()

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


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here (native bf16 math, not emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
