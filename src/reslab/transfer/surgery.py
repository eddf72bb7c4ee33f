"""Channel surgery: make a 3-channel model take grey images, and the batch transform that
feeds a pretrained model images of another size or channel count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from reslab.models import InputNormalize, ResNet

__all__ = ["adapt_to_grayscale", "resize_and_repeat"]


@torch.no_grad()
def adapt_to_grayscale(model: ResNet) -> ResNet:
    """Turn a 3-channel model into a 1-channel one that treats grey images as the 3-channel
    model treats the same image repeated into every channel.

    The stem conv becomes ``std' * sum_c W_c / std_c`` (so per-channel stds are exact) and the
    normalisation takes the channels' mean ``m'``. With equal channel means the two models
    agree everywhere; otherwise the mean difference ``sum W_c (m_c - m') / std_c`` is folded
    into the first BatchNorm's running mean, exact wherever the first conv's window lies inside
    the image; windows overlapping the zero padding differ (the 3-channel model pads with a
    different raw value per channel, which no single grey channel can reproduce).
    """
    if model.in_chans != 3:
        raise ValueError(f"adapt_to_grayscale needs a 3-channel model, got {model.in_chans}")
    stem: Any = model.conv1  # a conv, or the deep stem's Sequential (conv, BN, ...)
    deep_stem = not hasattr(stem, "weight")
    bn: Any  # the BatchNorm after that conv
    conv, bn = (stem[0], stem[1]) if deep_stem else (stem, model.bn1)
    norm = model.normalize
    normalized = isinstance(norm, InputNormalize)
    if isinstance(norm, InputNormalize):
        cfg = norm.config()
        mean = torch.tensor(cfg["mean"], dtype=torch.float64)
        std = torch.tensor(cfg["std"], dtype=torch.float64)
        scale = cfg["scale"]
    else:
        mean = torch.zeros(3, dtype=torch.float64)
        std, scale = torch.ones(3, dtype=torch.float64), 1.0
    w = conv.weight.double()
    m1, s1 = float(mean.mean()), float(std.mean())
    w1 = s1 * (w / std.view(1, 3, 1, 1)).sum(1, keepdim=True)
    shift = (w * ((mean - m1) / std).view(1, 3, 1, 1)).sum((1, 2, 3))
    bn.running_mean.add_(shift.to(bn.running_mean.dtype))
    new_norm = InputNormalize([m1], [s1], scale=scale, bgr=False) if normalized else None
    model.set_input_channels(1, w1.to(conv.weight.dtype), new_norm)
    return model


def resize_and_repeat(size: int | None, repeat_to: int | None) -> Callable[[Tensor], Tensor]:
    """A batch transform: bilinear (antialiased) resize to ``size``, grey → ``repeat_to`` ch."""

    def transform(x: Tensor) -> Tensor:
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        if repeat_to is not None and x.shape[1] == 1 and repeat_to != 1:
            x = x.expand(-1, repeat_to, -1, -1)
        return x

    return transform
