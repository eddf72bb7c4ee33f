"""Input normalisation that lives inside the model.

A model built with ``normalize=True`` takes images scaled to 0–1 and applies
its own fixed preprocessing, so forgetting to normalise (and getting confident
nonsense) cannot happen. The statistics are non-persistent buffers: they are
not part of the state dict, so torchvision weights still load 1:1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from reslab.models.config import DataConfig, Normalization

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# Keras "caffe" preprocessing: 0-255 pixels, BGR order, mean subtracted, no std.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


class InputNormalize(nn.Module):
    """``y = (x[:, order] * scale - mean) / std`` with fixed per-channel statistics.

    Args:
        mean: per-channel mean, in the *output* channel order.
        std: per-channel std, in the output channel order.
        scale: factor applied first (255 for models trained on 0–255 pixels).
        bgr: reverse the channel order (RGB → BGR) before subtracting the mean.
    """

    __jit_unused_properties__ = ["normalization", "num_channels"]
    if TYPE_CHECKING:  # for the type checker only: TorchScript reads class annotations
        mean: Tensor
        std: Tensor

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: float = 1.0,
        bgr: bool = False,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.scale = float(scale)
        self.bgr = bool(bgr)
        # Plain copies for config(): readable even when the buffers live on "meta".
        self._stats = ([float(m) for m in mean], [float(s) for s in std])
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(shape), persistent=False)

    @classmethod
    def from_config(cls, norm: Normalization) -> InputNormalize:
        return cls(norm.mean, norm.std, scale=norm.scale, bgr=norm.bgr)

    @property
    def normalization(self) -> Normalization:
        """The statistics as a frozen config (what the model's :class:`ModelConfig` holds)."""
        mean, std = tuple(self._stats[0]), tuple(self._stats[1])
        return Normalization(mean, std, scale=self.scale, bgr=self.bgr)

    @property
    def num_channels(self) -> int:
        return self.mean.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.bgr:
            x = x.flip([1])
        if self.scale != 1.0:
            x = x * self.scale
        return (x - self.mean) / self.std

    def config(self) -> dict:
        return {
            "mean": list(self._stats[0]),
            "std": list(self._stats[1]),
            "scale": self.scale,
            "bgr": self.bgr,
        }

    def extra_repr(self) -> str:
        cfg = self.config()
        mean = ", ".join(f"{m:.4g}" for m in cfg["mean"])
        std = ", ".join(f"{s:.4g}" for s in cfg["std"])
        return f"mean=({mean}), std=({std}), scale={self.scale:g}, bgr={self.bgr}"


def channel_stats(stats: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Adapt 3-channel statistics to ``in_chans`` channels (averaged, then repeated)."""
    if len(stats) == in_chans:
        return tuple(stats)
    avg = sum(stats) / len(stats)
    return (avg,) * in_chans


def default_data_config(in_chans: int = 3, small_input: bool = False) -> DataConfig:
    """The data config of a hand-built ResNet: ImageNet's at 224 px, or CIFAR's at 32 px for a
    small-input stem (statistics averaged over the channels when there are not three)."""
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if small_input else (IMAGENET_MEAN, IMAGENET_STD)
    side = 32 if small_input else 224
    return DataConfig(
        input_size=(in_chans, side, side),
        mean=channel_stats(mean, in_chans),
        std=channel_stats(std, in_chans),
        crop_pct=1.0 if small_input else 0.875,
    )
