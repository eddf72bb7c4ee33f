"""The from-scratch layer set: torch.nn's twins whose forward passes call :mod:`reslab.ops`.

Each class has its torch.nn twin's constructor signature, attribute names,
parameter and buffer names, initialisation (the same ``reset_parameters``, so
the same seed gives the same weights) and ``extra_repr``. State dicts
therefore load strictly in both directions, and
``create_model(name, layers="scratch")`` builds the same network out of ops
written with strided views. None of them subclasses its torch twin, so code
that dispatches on ``isinstance(m, nn.Conv2d)`` is not fooled into calling
torch's kernels. As in :mod:`reslab.layers.scratch_simple`, torch.fx records each op
as one call and ``torch.jit.script`` is refused with its reason.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import init

from reslab.layers.base import LayerSet
from reslab.layers.scratch_simple import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    Flatten,
    Identity,
    MaxPool2d,
    ReLU,
    ScratchModule,
    Sequential,
    layer_pair,
)
from reslab.ops import batch_norm2d, conv2d, linear
from reslab.ops.conv import same_padding

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "Flatten", "Identity",
           "Linear", "MaxPool2d", "ReLU", "SCRATCH_LAYERS", "ScratchModule", "Sequential",
           "batch_norm_step"]  # fmt: skip

_PAIR = int | tuple[int, int]


def batch_norm_step(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_batch: bool,
    momentum: float | None,
    eps: float,
    num_batches_tracked: Tensor | None,
) -> Tensor:
    """One :class:`BatchNorm2d` forward: check for ``(N, C, H, W)``, count the batch (when
    ``num_batches_tracked`` is given), pick the update factor (``momentum``, or a cumulative
    average for ``None``) and normalise with :func:`reslab.ops.batch_norm2d`."""
    if input.dim() != 4:
        raise ValueError(f"expected 4D input (got {input.dim()}D input)")
    factor = 0.0 if momentum is None else momentum
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average
            factor = 1.0 / float(num_batches_tracked)
    return batch_norm2d(input, running_mean, running_var, weight, bias, use_batch, factor, eps)


# torch.fx records each op as one call (the shape checks and arithmetic run with the graph).
for _op in ("conv2d", "linear", "batch_norm_step"):
    torch.fx.wrap(_op)


def _make_weight_and_bias(module: nn.Module, shape: tuple, bias: bool, factory: dict) -> None:
    module.weight = nn.Parameter(torch.empty(shape, **factory))
    if bias:
        module.bias = nn.Parameter(torch.empty(shape[0], **factory))
    else:
        module.register_parameter("bias", None)


def _reset_weight_and_bias(module: Conv2d | Linear) -> None:
    # torch.nn.Conv2d's and Linear's init: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in)).
    with torch.no_grad():
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(module.bias, -bound, bound)


class Conv2d(ScratchModule):
    """2-D convolution (:func:`reslab.ops.conv2d`); mirrors :class:`torch.nn.Conv2d`."""

    weight: Tensor
    bias: Tensor | None
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: str | tuple[int, ...]
    dilation: tuple[int, ...]
    output_padding: tuple[int, ...]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _PAIR,
        stride: _PAIR = 1,
        padding: str | _PAIR = 0,
        dilation: _PAIR = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        kernel, strides, dilations = (
            layer_pair(kernel_size),
            layer_pair(stride),
            layer_pair(dilation),
        )
        pad = padding if isinstance(padding, str) else layer_pair(padding)
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError("groups must be positive and divide in_channels and out_channels")
        if isinstance(pad, str) and pad not in {"same", "valid"}:
            raise ValueError(f"Invalid padding string {pad!r}, should be 'same' or 'valid'")
        if pad == "same" and any(s != 1 for s in strides):
            raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in {"zeros", "reflect", "replicate", "circular"}:
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, "
                             f"but got padding_mode='{padding_mode}'")  # fmt: skip
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel, strides, pad
        self.dilation, self.groups, self.padding_mode = dilations, groups, padding_mode
        self.transposed, self.output_padding = False, (0, 0)
        # F.pad's (left, right, top, bottom), used by the non-zero padding modes.
        if pad == "same":
            top, bottom, left, right = same_padding(kernel, dilations)
            self._reversed_padding_repeated_twice = [left, right, top, bottom]
        elif isinstance(pad, str):  # "valid"
            self._reversed_padding_repeated_twice = [0, 0, 0, 0]
        else:
            self._reversed_padding_repeated_twice = [p for p in pad[::-1] for _ in (0, 1)]
        shape = (out_channels, in_channels // groups, *kernel)
        _make_weight_and_bias(self, shape, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)

    def forward(self, input: Tensor) -> Tensor:
        padding: str | tuple[int, ...] | int = self.padding
        if self.padding_mode != "zeros":
            pads = self._reversed_padding_repeated_twice
            input, padding = nn.functional.pad(input, pads, mode=self.padding_mode), 0
        return conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)  # fmt: skip


class BatchNorm2d(ScratchModule):
    """Batch norm over ``(N, C, H, W)`` (:func:`reslab.ops.batch_norm2d`); mirrors
    :class:`torch.nn.BatchNorm2d`, including ``momentum=None`` (a cumulative
    average over ``num_batches_tracked`` batches) and ``track_running_stats``."""

    _version = 2  # as torch's: version 2 added num_batches_tracked
    weight: Tensor | None
    bias: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            # __init__ registers the three buffers whenever running stats are tracked.
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            assert self.weight is not None  # __init__ makes the weight when affine
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            "{num_features}, eps={eps}, momentum={momentum}, affine={affine}, "
            "bias={use_bias}, track_running_stats={track_running_stats}".format(
                **self.__dict__, use_bias=self.bias is not None
            )
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # As torch: state dicts from before num_batches_tracked existed load with a count of 0.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            nbt = self.num_batches_tracked
            keep = nbt is not None and nbt.device != torch.device("meta")
            state_dict[key] = nbt if keep else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, input: Tensor) -> Tensor:
        count = self.num_batches_tracked if self.training and self.track_running_stats else None
        # Batch statistics in training, and in eval when there are no running buffers.
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        update = not self.training or self.track_running_stats
        mean, var = (self.running_mean, self.running_var) if update else (None, None)
        return batch_norm_step(input, mean, var, self.weight, self.bias, use_batch, self.momentum,
                               self.eps, count)  # fmt: skip


class Linear(ScratchModule):
    """``x @ W.T + b`` (:func:`reslab.ops.linear`); mirrors :class:`torch.nn.Linear`."""

    weight: Tensor
    bias: Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        _make_weight_and_bias(self, (out_features, in_features), bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self)

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


SCRATCH_LAYERS = LayerSet(
    name="scratch", conv2d=Conv2d, batch_norm2d=BatchNorm2d, relu=ReLU, max_pool2d=MaxPool2d,
    avg_pool2d=AvgPool2d, adaptive_avg_pool2d=AdaptiveAvgPool2d, linear=Linear, flatten=Flatten,
    sequential=Sequential, identity=Identity,
)  # fmt: skip
