"""Residual blocks and shortcuts, built from a :class:`~reslab.layers.LayerSet`.

Module names follow torchvision (``conv1``, ``bn1``, ``downsample.0``…) so that
torchvision state dicts load without renaming.
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from reslab.layers import LayerSet
from reslab.models.config import ConfigError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvBlock",
    "DropPath",
    "drop_path",
    "PadShortcut",
    "make_shortcut",
    "conv1x1",
    "conv3x3",
    "dirac_init_",
]

# Relative size of the noise added to a Dirac (identity) initialisation.
DIRAC_NOISE = 1e-2


def conv3x3(
    ls: LayerSet,
    in_planes: int,
    out_planes: int,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
) -> nn.Module:
    """3x3 convolution with padding; no bias because a BatchNorm follows."""
    return ls.conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
    )


def conv1x1(ls: LayerSet, in_planes: int, out_planes: int, stride: int = 1) -> nn.Module:
    """1x1 convolution; no bias because a BatchNorm follows."""
    return ls.conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero each sample's ``x`` with probability ``p`` and scale the rest by ``1/(1-p)``
    (training only; the identity otherwise)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


# FX records drop_path as one call: its mask's shape comes from the input's.
torch.fx.wrap("drop_path")


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability ``p``.

    Kept branches are scaled by ``1/(1-p)`` so the expectation is unchanged and
    evaluation needs no rescaling.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PadShortcut(nn.Module):
    """The paper's option A shortcut: subsample spatially, zero-pad the new channels.

    It has no parameters, which is why the CIFAR ResNets have exactly as many
    weights as their plain twins.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:  # padding cannot narrow; negative padding would crop
            raise ConfigError(
                f"shortcut='pad' cannot go from {in_planes} to {out_planes} channels; "
                "use shortcut='conv'"
            )
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        if self.extra == 0:
            return x
        front = self.extra // 2
        return nn.functional.pad(x, [0, 0, 0, 0, front, self.extra - front])

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def make_shortcut(
    ls: LayerSet, kind: str, in_planes: int, out_planes: int, stride: int
) -> nn.Module | None:
    """Build the shortcut used when a block changes resolution or width.

    Args:
        kind: ``"conv"`` (option B, torchvision: strided 1x1 conv + BN),
            ``"avg"`` (ResNet-D: 2x2 average pool, then 1x1 conv + BN, so no
            activations are skipped by a strided 1x1), ``"pad"`` (option A) or
            ``"none"`` (plain networks: no shortcut at all).
    """
    if kind == "none":
        return None
    if kind == "pad":
        return PadShortcut(in_planes, out_planes, stride)
    if kind == "conv":
        return ls.sequential(
            conv1x1(ls, in_planes, out_planes, stride), ls.batch_norm2d(out_planes)
        )
    if kind == "avg":
        # Names as in timm (pool, conv, bn at 0, 1, 2); an identity keeps the
        # indices stable when the block does not downsample.
        pool = (
            ls.avg_pool2d(2, stride, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else ls.identity()
        )
        return ls.sequential(pool, conv1x1(ls, in_planes, out_planes), ls.batch_norm2d(out_planes))
    raise ValueError(f"unknown shortcut kind {kind!r}; expected conv, avg, pad or none")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets)."""

    expansion: int = 1

    def __init__(
        self,
        ls: LayerSet,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,  # no 1x1 conv here; accepted so all blocks share a signature
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = conv3x3(ls, inplanes, planes, stride)
        self.bn1 = ls.batch_norm2d(planes)
        self.relu = ls.relu(inplace=True)
        self.conv2 = conv3x3(ls, planes, planes)
        self.bn2 = ls.batch_norm2d(planes)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def last_bn(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)
            out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50 and deeper, ResNeXt, wide ResNets).

    ``stride_in_1x1=False`` is torchvision's "v1.5" (the stride sits on the 3x3,
    which loses less information); ``True`` is the original paper's v1, where
    the first 1x1 convolution strides.
    """

    expansion: int = 4

    def __init__(
        self,
        ls: LayerSet,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(ls, inplanes, width, s1)
        self.bn1 = ls.batch_norm2d(width)
        self.conv2 = conv3x3(ls, width, width, s3, groups)
        self.bn2 = ls.batch_norm2d(width)
        self.conv3 = conv1x1(ls, width, planes * self.expansion)
        self.bn3 = ls.batch_norm2d(planes * self.expansion)
        self.relu = ls.relu(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None

    def last_bn(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            identity = x if self.downsample is None else self.downsample(x)
            out = out + identity
        return self.relu(out)


class ConvBlock(nn.Module):
    """One 3x3 conv, BatchNorm and ReLU: the layer of a plain CNN (fastbook's ``ConvLayer``).

    It has no shortcut, so it takes the block arguments only to share their signature.
    """

    expansion: int = 1

    def __init__(
        self,
        ls: LayerSet,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        residual: bool = False,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if downsample is not None or residual:
            raise ValueError("ConvBlock has no shortcut (build it with shortcut='none')")
        self.conv1 = conv3x3(ls, inplanes, planes, stride, groups)
        self.bn1 = ls.batch_norm2d(planes)
        self.relu = ls.relu(inplace=True)
        self.residual = False

    def last_bn(self) -> nn.Module:
        return self.bn1

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "conv": ConvBlock,
}


def get_block(block: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(block, str):
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; expected one of {sorted(BLOCKS)}")
        return BLOCKS[block]
    return block


def zero_init_last_bn(module: nn.Module) -> None:
    """Zero each residual block's last BN gamma, so every block starts as identity."""
    for m in module.modules():
        if isinstance(m, (BasicBlock, Bottleneck)) and m.residual:
            bn = m.last_bn()
            weight = getattr(bn, "weight", None)
            if weight is not None:
                torch.nn.init.zeros_(weight)


@torch.no_grad()
def dirac_init_(weight: Tensor, groups: int = 1, noise: float = DIRAC_NOISE) -> Tensor:
    """Initialise a conv weight ``(O, I/groups, kh, kw)`` as an identity plus small noise.

    Output channel ``o`` copies input channel ``o`` through the kernel's centre (for ``O > I``
    the extra outputs start at zero, like option A's zero-padded channels); Gaussian noise of
    ``noise`` times the He (fan-in) standard deviation breaks the symmetry between them.
    """
    fan_in = weight[0].numel()
    std = noise * (2.0 / fan_in) ** 0.5
    torch.nn.init.dirac_(weight, groups=groups)
    if noise > 0:
        weight.add_(torch.randn_like(weight) * std)
    return weight
