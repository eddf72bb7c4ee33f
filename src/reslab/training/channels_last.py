"""Channels-last (NHWC) memory format for the model and every input batch."""

from __future__ import annotations

import torch
from torch import Tensor

from reslab.training.callback import Callback

__all__ = [
    "ChannelsLast",
]


class ChannelsLast(Callback):
    """Store the model and every input batch in channels-last (NHWC) memory format.

    oneDNN (CPU) and cuDNN (tensor cores) run NHWC convolutions faster, most of all under
    bf16/fp16 autocast.
    """

    def attach(self) -> None:
        self.learn.model.to(memory_format=torch.channels_last)
        self.learn.input_transforms.append(_to_channels_last)

    def detach(self) -> None:
        # The weights stay channels-last (same values); the inputs stop being converted.
        self.learn.input_transforms.remove(_to_channels_last)


def _to_channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
