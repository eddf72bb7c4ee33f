"""One configurable ResNet: torchvision nets, ResNet-B/C/D, xresnet, CIFAR nets, plain nets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from reslab.layers import LayerSet, get_layer_set
from reslab.models.blocks import BLOCKS, dirac_init_, get_block, make_shortcut, zero_init_last_bn
from reslab.models.config import ArchConfig, DataConfig, ModelConfig
from reslab.models.normalize import InputNormalize, channel_stats, default_data_config
from reslab.models.trunk import Backbone, Trunk

__all__ = ["ResNet"]


def _expansion(block: type[nn.Module]) -> int:
    """A block class's output channels per ``planes`` (its ``expansion``: 1 basic, 4 bottleneck)."""
    expansion = getattr(block, "expansion", None)
    if not isinstance(expansion, int):
        raise TypeError(f"block {block.__qualname__} has no int class attribute 'expansion'")
    return expansion


def _block_name(block: type[nn.Module]) -> str:
    """The registered name of a block class, else ``module:qualname`` (such a model runs, but
    a checkpoint cannot rebuild it: classes are never imported from files)."""
    for name, cls in BLOCKS.items():
        if cls is block:
            return name
    return f"{block.__module__}:{block.__qualname__}"


class ResNet(Trunk):
    """A residual network assembled from a layer set.

    Module names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, …,
    ``fc``), and timm's for the deep stem (``conv1.0``…``conv1.6``) and the
    average-pool shortcut (``downsample.1``/``downsample.2``).

    Args:
        block: ``"basic"``, ``"bottleneck"`` or a block class.
        layers: number of blocks in each stage (3 stages for CIFAR nets, 4 for ImageNet).
        num_classes: classifier outputs; 0 leaves ``fc`` an identity (a pure backbone).
        in_chans: input image channels.
        stage_widths: ``planes`` of each stage before the block's expansion.
        groups, width_per_group: ResNeXt cardinality and bottleneck width
            (wide ResNets use ``width_per_group=128``).
        width: multiplier applied to every stage width (and the stem).
        stem_type: ``"default"`` (7x7 conv), ``"deep"`` (ResNet-C: three 3x3 convs) or
            ``"none"`` (the first stage takes the image).
        stem_width: channels of the deep stem's first two convs.
        small_input: 3x3 stride-1 stem and no max-pool, for 28–32 px images.
        shortcut: ``"conv"`` (B), ``"avg"`` (D), ``"pad"`` (option A) or ``"none"`` (plain net).
        stride_in_1x1: put a bottleneck's stride on its first 1x1 conv (paper's v1).
        zero_init_last: zero the last BN gamma of every block ("BatchZero").
        drop_path_rate: stochastic depth, rising linearly to this rate in the last block.
        layer_set: ``"torch"``, ``"scratch"`` or a :class:`~reslab.layers.LayerSet`.
        init: ``"kaiming"`` (He, as torchvision) or ``"dirac"``: every conv starts as an
            identity plus small noise (plain nets that train without shortcuts).
        stage_strides: each stage's first stride (default 1, then 2 for every later stage).
        normalize: an :class:`InputNormalize` to apply first, or ``None`` for raw inputs.
        name: the registered name, recorded in :attr:`config`.
        data: input size, statistics, crop and class names (default: ImageNet's, or CIFAR's
            for ``small_input``).

    Everything but the weights is in :attr:`config` (a frozen :class:`ModelConfig`), so any
    ``ResNet`` can be saved and rebuilt from its checkpoint.

    ``torch.fx`` (so torchvision's ``create_feature_extractor``), ``torch.jit.script``,
    ``torch.export`` and ``torch.compile(fullgraph=True)`` all accept the model built from
    torch.nn layers (see docs/tools.md).
    """

    # TorchScript compiles the forward pass only: the config and the Python-side API stay out.
    __jit_ignored_attributes__ = ["_config", "layer_set", "block"]
    __jit_unused_properties__ = [
        "config", "num_classes", "in_chans", "class_names", "default_cfg", "stages",
        "backbone", "head",
    ]  # fmt: skip

    def __init__(
        self,
        block: str | type[nn.Module] = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        stage_widths: Sequence[int] = (64, 128, 256, 512),
        groups: int = 1,
        width_per_group: int = 64,
        width: float = 1.0,
        stem_type: str = "default",
        stem_width: int = 32,
        small_input: bool = False,
        shortcut: str = "conv",
        stride_in_1x1: bool = False,
        zero_init_last: bool = False,
        drop_path_rate: float = 0.0,
        init: str = "kaiming",
        stage_strides: Sequence[int] | None = None,
        layer_set: str | LayerSet = "torch",
        normalize: InputNormalize | None = None,
        name: str | None = None,
        data: DataConfig | None = None,
    ) -> None:
        super().__init__()
        self.block = get_block(block)
        arch = ArchConfig(
            block=block if isinstance(block, str) else _block_name(self.block),
            layers=tuple(layers),
            num_classes=num_classes,
            in_chans=in_chans,
            stage_widths=tuple(stage_widths),
            groups=groups,
            width_per_group=width_per_group,
            width=width,
            stem_type=stem_type,
            stem_width=stem_width,
            small_input=small_input,
            shortcut=shortcut,
            stride_in_1x1=stride_in_1x1,
            zero_init_last=zero_init_last,
            drop_path_rate=drop_path_rate,
            init=init,
            stage_strides=None if stage_strides is None else tuple(stage_strides),
        )
        if data is None:
            data = default_data_config(in_chans, small_input)
        self.config = ModelConfig(
            arch=arch,
            data=data,
            normalize=None if normalize is None else normalize.normalization,
            name=name,
        )
        ls = get_layer_set(layer_set)
        self.layer_set = ls
        self.groups = groups
        self.base_width = width_per_group
        self.shortcut = shortcut
        self.stride_in_1x1 = stride_in_1x1
        widths = [max(1, int(round(w * width))) for w in stage_widths]
        self.normalize = normalize if normalize is not None else ls.identity()
        self._make_stem_layers(ls, arch, widths[0])
        self.stage_names = []
        strides = arch.stage_strides or (1, *(2,) * (len(layers) - 1))
        self._make_stages(ls, widths, layers, strides, drop_path_rate)

        self.num_features = widths[-1] * _expansion(self.block)
        self.avgpool = ls.adaptive_avg_pool2d((1, 1))
        self.flatten = ls.flatten(1)
        self.fc = self._make_classifier(num_classes)
        self._init_weights(zero_init_last, init)

    @classmethod
    def from_config(cls, config: ModelConfig, layer_set: str | LayerSet = "torch") -> ResNet:
        """Build (random weights) the model ``config`` describes, e.g. from a checkpoint."""
        norm = config.normalize
        model = cls(
            **config.arch.kwargs(),
            layer_set=layer_set,
            normalize=None if norm is None else InputNormalize.from_config(norm),
            name=config.name,
            data=config.data,
        )
        model.config = config
        return model

    # ----------------------------------------------------------------- config
    @property
    def config(self) -> ModelConfig:
        """Everything but the weights (frozen: change it through the methods below)."""
        return self._config

    @config.setter
    def config(self, config: ModelConfig) -> None:
        self._config = config
        self.input_chans = config.arch.in_chans  # what the (scriptable) input check reads

    @property
    def num_classes(self) -> int:
        return self.config.arch.num_classes

    @property
    def in_chans(self) -> int:
        return self.config.arch.in_chans

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.config.data.class_names

    @property
    def default_cfg(self) -> Mapping[str, Any]:
        """The config as timm's flat, read-only dict (``input_size``, ``mean``, ``crop_pct``…)."""
        return MappingProxyType(self.config.flat())

    def set_data_config(self, **changes: Any) -> None:
        """Change the data config (``input_size``, ``crop_pct``, ``class_names``…), validated."""
        data = dataclasses.replace(self.config.data, **changes)
        self.config = self.config.replace(data=data)

    def set_pretrained(self, source: str | None) -> None:
        """Record where the weights came from."""
        self.config = self.config.replace(pretrained=source)

    # ----------------------------------------------------------------- building
    def _make_stem_layers(self, ls: LayerSet, arch: ArchConfig, width: int) -> None:
        """``conv1``, ``bn1``, ``relu``, ``maxpool``; all identities for ``stem_type="none"``
        (the first stage then sees the image itself)."""
        if arch.stem_type == "none":
            self.inplanes = arch.in_chans
            self.conv1, self.bn1 = ls.identity(), ls.identity()
            self.relu, self.maxpool = ls.identity(), ls.identity()
            return
        self.inplanes = width
        stem_width = max(1, int(round(arch.stem_width * arch.width)))
        self.conv1 = self._make_stem(ls, arch.stem_type, stem_width, arch.small_input)
        self.bn1 = ls.batch_norm2d(self.inplanes)
        self.relu = ls.relu(inplace=True)
        small = arch.small_input
        self.maxpool = ls.identity() if small else ls.max_pool2d(kernel_size=3, stride=2, padding=1)

    def _make_stem(self, ls: LayerSet, stem_type: str, stem_width: int, small: bool) -> nn.Module:
        stride = 1 if small else 2
        if stem_type == "default":
            if small:
                return ls.conv2d(self.in_chans, self.inplanes, 3, stride=1, padding=1, bias=False)
            return ls.conv2d(self.in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        if stem_type == "deep":
            return ls.sequential(
                ls.conv2d(self.in_chans, stem_width, 3, stride=stride, padding=1, bias=False),
                ls.batch_norm2d(stem_width),
                ls.relu(inplace=True),
                ls.conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
                ls.batch_norm2d(stem_width),
                ls.relu(inplace=True),
                ls.conv2d(stem_width, self.inplanes, 3, stride=1, padding=1, bias=False),
            )
        raise ValueError(f"unknown stem_type {stem_type!r}; expected 'default' or 'deep'")

    def _make_stages(
        self,
        ls: LayerSet,
        widths: Sequence[int],
        layers: Sequence[int],
        strides: Sequence[int],
        drop_path_rate: float,
    ) -> None:
        """``layer1``…``layerN``; stochastic depth rises linearly over all blocks."""
        total_blocks = sum(layers)
        rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        for i, (planes, n, stride) in enumerate(zip(widths, layers, strides)):
            stage = self._make_layer(ls, planes, n, stride, rates[:n])
            rates = rates[n:]
            self.add_module(f"layer{i + 1}", stage)
            self.stage_names.append(f"layer{i + 1}")

    def _make_layer(
        self, ls: LayerSet, planes: int, blocks: int, stride: int, rates: Sequence[float]
    ) -> nn.Module:
        out_planes = planes * _expansion(self.block)
        downsample = None
        if stride != 1 or self.inplanes != out_planes:
            downsample = make_shortcut(ls, self.shortcut, self.inplanes, out_planes, stride)
        residual = self.shortcut != "none"
        stage = []
        for i in range(blocks):
            stage.append(
                self.block(
                    ls,
                    self.inplanes,
                    planes,
                    stride=stride if i == 0 else 1,
                    downsample=downsample if i == 0 else None,
                    groups=self.groups,
                    base_width=self.base_width,
                    residual=residual,
                    drop_path=rates[i],
                    stride_in_1x1=self.stride_in_1x1,
                )
            )
            self.inplanes = out_planes
        return ls.sequential(*stage)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if num_classes == 0:
            return self.layer_set.identity()
        return self.layer_set.linear(self.num_features, num_classes)

    def _init_weights(self, zero_init_last: bool, init: str) -> None:
        # torchvision's init: He (fan-out) for convs, unit-gamma BNs; the fc keeps
        # nn.Linear's default. "dirac": every conv starts as an identity plus small noise.
        for m in self.modules():
            layer: Any = m  # the layer set's conv or BN: torch.nn's, or a twin with its attributes
            if isinstance(m, self.layer_set.conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if init == "dirac":
                    dirac_init_(layer.weight, layer.groups)
            elif isinstance(m, self.layer_set.batch_norm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
        if zero_init_last:
            zero_init_last_bn(self)

    # ----------------------------------------------------------------- API
    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.stage_names]

    def reset_classifier(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        """Replace ``fc`` with a freshly initialised classifier for ``num_classes``."""
        arch = dataclasses.replace(self.config.arch, num_classes=num_classes)
        data = dataclasses.replace(
            self.config.data, class_names=None if class_names is None else tuple(class_names)
        )
        self.config = self.config.replace(arch=arch, data=data)
        self.fc = self._make_classifier(num_classes)

    def set_input_channels(
        self, in_chans: int, conv_weight: Tensor, normalize: InputNormalize | None
    ) -> None:
        """Make the model take ``in_chans``-channel images: the first conv's new weight and the
        normalisation for the new channels (None: the model takes normalised input)."""
        stem: Any = self.conv1  # a conv, or the deep stem's Sequential starting with one
        conv = stem if hasattr(stem, "weight") else stem[0]
        if conv_weight.shape[1] != in_chans or conv_weight.shape[0] != conv.weight.shape[0]:
            raise ValueError(
                f"conv weight {tuple(conv_weight.shape)} does not fit {in_chans} input channels"
            )
        conv.weight = nn.Parameter(conv_weight, requires_grad=conv.weight.requires_grad)
        conv.in_channels = in_chans
        self.normalize = normalize if normalize is not None else self.layer_set.identity()
        norm = None if normalize is None else normalize.normalization
        data = self.config.data
        data = dataclasses.replace(
            data,
            input_size=(in_chans, *data.input_size[1:]),
            mean=channel_stats(data.mean, in_chans) if norm is None else norm.mean,
            std=channel_stats(data.std, in_chans) if norm is None else norm.std,
        )
        arch = dataclasses.replace(self.config.arch, in_chans=in_chans)
        self.config = self.config.replace(arch=arch, data=data, normalize=norm)

    @property
    def backbone(self) -> Backbone:
        """The image-embedding model: everything but ``fc`` (shares its modules)."""
        return Backbone(self)

    @property
    def head(self) -> nn.Module:
        """The class model: one linear layer over the pooled embedding."""
        return self.fc

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool a feature map; return the embedding (``pre_logits``) or the logits."""
        x = self.flatten(self.avgpool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))
