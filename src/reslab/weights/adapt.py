"""Adapt weights between models that differ in input channels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["adapt_input_conv", "first_conv_key"]


def first_conv_key(state_dict: dict[str, Tensor]) -> str | None:
    """The key of the stem's first convolution weight (plain or deep stem)."""
    for key in ("conv1.weight", "conv1.0.weight"):
        if key in state_dict:
            return key
    return None


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Turn a conv weight ``(O, C, kh, kw)`` into one for ``in_chans`` input channels.

    One channel: sum over the channels, so a grey image gives the same response
    as that image repeated into every channel. More channels: repeat the
    kernels cyclically and rescale by ``C / in_chans`` so the expected
    activation stays the same.
    """
    out_c, c, kh, kw = weight.shape
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_chans / c)
    repeated = weight.repeat(1, reps, 1, 1)[:, :in_chans]
    return repeated * (c / float(in_chans))


def adapt_state_dict_channels(state_dict: dict[str, Tensor], in_chans: int) -> dict[str, Tensor]:
    """Return a copy of ``state_dict`` whose first conv takes ``in_chans`` channels."""
    key = first_conv_key(state_dict)
    if key is None or state_dict[key].shape[1] == in_chans:
        return state_dict
    adapted = dict(state_dict)
    with torch.no_grad():
        adapted[key] = adapt_input_conv(state_dict[key], in_chans)
    return adapted
