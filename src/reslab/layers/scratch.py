"""The from-scratch layer set: torch.nn's twins whose forward passes call :mod:`reslab.ops`.

Each class has its torch.nn twin's constructor signature, attribute names,
parameter and buffer names, initialisation (the same ``reset_parameters``, so
the same seed gives the same weights) and ``extra_repr``. State dicts
therefore load strictly in both directions, and
``create_model(name, layers="scratch")`` builds the same network out of ops
written with strided views. None of them subclasses its torch twin, so code
that dispatches on ``isinstance(m, nn.Conv2d)`` is not fooled into calling
torch's kernels.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import init

from reslab import ops
from reslab.layers import LayerSet
from reslab.ops.conv import _same_padding

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv2d", "Flatten", "Identity",
           "Linear", "MaxPool2d", "ReLU", "SCRATCH_LAYERS", "Sequential"]  # fmt: skip

_PAIR = int | tuple[int, int]


def _pair(value: Any) -> tuple[int, ...]:
    # As torch.nn.modules.utils._pair: an iterable is kept as a tuple, a scalar doubled.
    return tuple(value) if isinstance(value, Iterable) else (value, value)


def _make_weight_and_bias(module: nn.Module, shape: tuple, bias: bool, factory: dict) -> None:
    module.weight = nn.Parameter(torch.empty(shape, **factory))
    if bias:
        module.bias = nn.Parameter(torch.empty(shape[0], **factory))
    else:
        module.register_parameter("bias", None)


def _reset_weight_and_bias(module: nn.Module) -> None:
    # torch.nn.Conv2d's and Linear's init: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in)).
    with torch.no_grad():
        init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        if module.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(module.bias, -bound, bound)


class Conv2d(nn.Module):
    """2-D convolution (:func:`reslab.ops.conv2d`); mirrors :class:`torch.nn.Conv2d`."""

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
        kernel_size, stride, dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        if not isinstance(padding, str):
            padding = _pair(padding)
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError("groups must be positive and divide in_channels and out_channels")
        if isinstance(padding, str) and padding not in {"same", "valid"}:
            raise ValueError(f"Invalid padding string {padding!r}, should be 'same' or 'valid'")
        if padding == "same" and any(s != 1 for s in stride):
            raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in {"zeros", "reflect", "replicate", "circular"}:
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, "
                             f"but got padding_mode='{padding_mode}'")  # fmt: skip
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.groups, self.padding_mode = dilation, groups, padding_mode
        self.transposed, self.output_padding = False, (0, 0)
        # F.pad's (left, right, top, bottom), used by the non-zero padding modes.
        if padding == "same":
            top, bottom, left, right = _same_padding(kernel_size, dilation)
            self._reversed_padding_repeated_twice = [left, right, top, bottom]
        elif padding == "valid":
            self._reversed_padding_repeated_twice = [0, 0, 0, 0]
        else:
            self._reversed_padding_repeated_twice = [p for p in padding[::-1] for _ in (0, 1)]
        shape = (out_channels, in_channels // groups, *kernel_size)
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
        padding = self.padding
        if self.padding_mode != "zeros":
            pads = self._reversed_padding_repeated_twice
            input, padding = nn.functional.pad(input, pads, mode=self.padding_mode), 0
        return ops.conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                          self.groups)  # fmt: skip


class BatchNorm2d(nn.Module):
    """Batch norm over ``(N, C, H, W)`` (:func:`reslab.ops.batch_norm2d`); mirrors
    :class:`torch.nn.BatchNorm2d`, including ``momentum=None`` (a cumulative
    average over ``num_batches_tracked`` batches) and ``track_running_stats``."""

    _version = 2  # as torch's: version 2 added num_batches_tracked

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
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
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
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        # Batch statistics in training, and in eval when there are no running buffers.
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        update = not self.training or self.track_running_stats
        mean, var = (self.running_mean, self.running_var) if update else (None, None)
        return ops.batch_norm2d(input, mean, var, self.weight, self.bias, use_batch, factor,
                                self.eps)  # fmt: skip


class ReLU(nn.Module):
    """``max(x, 0)`` (:func:`reslab.ops.relu`); mirrors :class:`torch.nn.ReLU`.

    ``inplace`` is accepted and shown in the repr, but the forward pass always
    returns a new tensor: an in-place ``clamp_min_`` has autograd keep a copy of
    the input anyway, so it would be slower and save no memory.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return ops.relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class MaxPool2d(nn.Module):
    """Max pooling (:func:`reslab.ops.max_pool2d`); mirrors :class:`torch.nn.MaxPool2d`."""

    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def extra_repr(self) -> str:
        return (
            "kernel_size={kernel_size}, stride={stride}, padding={padding}"
            ", dilation={dilation}, ceil_mode={ceil_mode}".format(**self.__dict__)
        )

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode, self.return_indices)  # fmt: skip


class AvgPool2d(nn.Module):
    """Average pooling (:func:`reslab.ops.avg_pool2d`); mirrors :class:`torch.nn.AvgPool2d`."""

    def __init__(
        self,
        kernel_size: _PAIR,
        stride: _PAIR | None = None,
        padding: _PAIR = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def forward(self, input: Tensor) -> Tensor:
        return ops.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override)  # fmt: skip


class AdaptiveAvgPool2d(nn.Module):
    """Adaptive average pooling (:func:`reslab.ops.adaptive_avg_pool2d`); mirrors
    :class:`torch.nn.AdaptiveAvgPool2d`."""

    def __init__(self, output_size: int | None | tuple[int | None, ...]) -> None:
        super().__init__()
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, input: Tensor) -> Tensor:
        return ops.adaptive_avg_pool2d(input, self.output_size)


class Linear(nn.Module):
    """``x @ W.T + b`` (:func:`reslab.ops.linear`); mirrors :class:`torch.nn.Linear`."""

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
        return ops.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Flatten(nn.Module):
    """Merge dims (:func:`reslab.ops.flatten`); mirrors :class:`torch.nn.Flatten`."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(nn.Module):
    """Returns its input; accepts and ignores any arguments, like :class:`torch.nn.Identity`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Sequential(nn.Module):
    """Modules applied in order; children are named ``"0"``, ``"1"``, … (or by the keys of
    one ``OrderedDict``), so state-dict keys match :class:`torch.nn.Sequential`'s."""

    def __init__(self, *args: Any) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def _index(self, idx: int) -> str:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range")
        return list(self._modules)[idx % n]

    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return self.__class__(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._index(idx)]

    def __setitem__(self, idx: int, module: nn.Module) -> None:
        setattr(self, self._index(idx), module)

    def __delitem__(self, idx: int | slice) -> None:
        keys = list(self._modules)[idx] if isinstance(idx, slice) else [self._index(idx)]
        for key in keys:
            delattr(self, key)
        # Renumber, as torch.nn.Sequential does, so names stay "0".."n-1".
        self._modules = OrderedDict((str(i), m) for i, m in enumerate(self._modules.values()))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())

    def append(self, module: nn.Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Any) -> Sequential:
        for module in modules:
            self.append(module)
        return self

    def forward(self, input: Any) -> Any:
        for module in self:
            input = module(input)
        return input


SCRATCH_LAYERS = LayerSet(
    name="scratch", conv2d=Conv2d, batch_norm2d=BatchNorm2d, relu=ReLU, max_pool2d=MaxPool2d,
    avg_pool2d=AvgPool2d, adaptive_avg_pool2d=AdaptiveAvgPool2d, linear=Linear, flatten=Flatten,
    sequential=Sequential, identity=Identity,
)  # fmt: skip
