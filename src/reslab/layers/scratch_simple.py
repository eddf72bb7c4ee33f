"""The parameter-free from-scratch layers: ReLU, pooling, Flatten, Identity, Sequential.

Twins of their torch.nn namesakes (constructor signatures, attributes, ``extra_repr``) whose
forward passes call :mod:`reslab.ops`; re-exported by :mod:`reslab.layers.scratch`.

PyTorch's program tools: ``torch.export`` and ``torch.compile`` trace the ops themselves.
``torch.fx`` records each op as one call (``torch.fx.wrap``): an op works out its output size
and strided views in Python from the input's shape, which FX's symbolic values cannot do, so
the op runs when the graph does. ``torch.jit.script`` is refused (:class:`ScratchModule`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import torch.fx
from torch import Tensor, nn

from reslab.ops import adaptive_avg_pool2d, avg_pool2d, flatten, max_pool2d, relu

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "Flatten", "Identity", "MaxPool2d", "ReLU",
           "ScratchModule", "Sequential"]  # fmt: skip

# torch.fx records these as single calls (see the module docstring).
for _op in ("adaptive_avg_pool2d", "avg_pool2d", "flatten", "max_pool2d", "relu"):
    torch.fx.wrap(_op)

_PAIR = int | tuple[int, int]


def layer_pair(value: Any) -> tuple[int, ...]:
    # As torch.nn.modules.utils._pair: an iterable is kept as a tuple, a scalar doubled.
    return tuple(value) if isinstance(value, Iterable) else (value, value)


class ScratchModule(nn.Module):
    """The base of the from-scratch layers: refuses ``torch.jit.script`` with the reason."""

    def __prepare_scriptable__(self) -> nn.Module:
        # torch.jit.script calls this on every submodule before compiling anything.
        raise RuntimeError(
            f"reslab's from-scratch {type(self).__name__} cannot be scripted: its op computes "
            "output sizes and strided views in Python (the point of these layers), which "
            "TorchScript cannot compile; use torch.export or torch.compile, or script the "
            "torch-layer twin (layers='torch' takes the same state dict)"
        )


class ReLU(ScratchModule):
    """``max(x, 0)`` (:func:`reslab.ops.relu`); mirrors :class:`torch.nn.ReLU`.

    ``inplace`` is accepted and shown in the repr, but the forward pass always
    returns a new tensor: an in-place ``clamp_min_`` has autograd keep a copy of
    the input anyway, so it would be slower and save no memory.
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return relu(input)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class MaxPool2d(ScratchModule):
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
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)  # fmt: skip


class AvgPool2d(ScratchModule):
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
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)  # fmt: skip


class AdaptiveAvgPool2d(ScratchModule):
    """Adaptive average pooling (:func:`reslab.ops.adaptive_avg_pool2d`); mirrors
    :class:`torch.nn.AdaptiveAvgPool2d`."""

    def __init__(self, output_size: int | None | tuple[int | None, ...]) -> None:
        super().__init__()
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool2d(input, self.output_size)


class Flatten(ScratchModule):
    """Merge dims (:func:`reslab.ops.flatten`); mirrors :class:`torch.nn.Flatten`."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(ScratchModule):
    """Returns its input; accepts and ignores any arguments, like :class:`torch.nn.Identity`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:
        return input


class Sequential(ScratchModule):
    """Modules applied in order; children are named ``"0"``, ``"1"``, … (or by the keys of
    one ``OrderedDict``), so state-dict keys match :class:`torch.nn.Sequential`'s."""

    # nn.Module types _modules' values as Optional; a Sequential holds modules only, and
    # torch.nn.Sequential narrows the declaration the same way.
    _modules: dict[str, nn.Module]  # type: ignore[assignment]

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
