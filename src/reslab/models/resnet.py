"""One configurable ResNet: torchvision nets, ResNet-B/C/D, xresnet, CIFAR nets, plain nets."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from reslab.layers import LayerSet, get_layer_set
from reslab.models.blocks import get_block, make_shortcut, zero_init_last_bn
from reslab.models.normalize import InputNormalize

__all__ = ["ResNet", "Backbone"]


class ResNet(nn.Module):
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
        stem_type: ``"default"`` (7x7 conv) or ``"deep"`` (ResNet-C: three 3x3 convs).
        stem_width: channels of the deep stem's first two convs.
        small_input: 3x3 stride-1 stem and no max-pool, for 28–32 px images.
        shortcut: ``"conv"`` (B), ``"avg"`` (D), ``"pad"`` (option A) or ``"none"`` (plain net).
        stride_in_1x1: put a bottleneck's stride on its first 1x1 conv (paper's v1).
        zero_init_last: zero the last BN gamma of every block ("BatchZero").
        drop_path_rate: stochastic depth, rising linearly to this rate in the last block.
        layer_set: ``"torch"``, ``"scratch"`` or a :class:`~reslab.layers.LayerSet`.
        normalize: an :class:`InputNormalize` to apply first, or ``None`` for raw inputs.
    """

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
        layer_set: str | LayerSet = "torch",
        normalize: InputNormalize | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(stage_widths):
            raise ValueError(f"{len(layers)} stage depths but {len(stage_widths)} stage widths")
        if in_chans < 1:
            raise ValueError(f"in_chans must be positive, got {in_chans}")
        ls = get_layer_set(layer_set)
        self.layer_set = ls
        self.block = get_block(block)
        self.in_chans = in_chans
        self.groups = groups
        self.base_width = width_per_group
        self.shortcut = shortcut
        self.stride_in_1x1 = stride_in_1x1
        widths = [max(1, int(round(w * width))) for w in stage_widths]
        self.inplanes = widths[0]

        if normalize is not None and normalize.num_channels != in_chans:
            raise ValueError(
                f"normalisation has {normalize.num_channels} channels but in_chans={in_chans}"
            )
        self.normalize = normalize if normalize is not None else ls.identity()
        self.conv1 = self._make_stem(
            ls, stem_type, max(1, int(round(stem_width * width))), small_input
        )
        self.bn1 = ls.batch_norm2d(self.inplanes)
        self.relu = ls.relu(inplace=True)
        self.maxpool = (
            ls.identity() if small_input else ls.max_pool2d(kernel_size=3, stride=2, padding=1)
        )

        total_blocks = sum(layers)
        rates = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        self.stage_names: list[str] = []
        for i, (planes, n) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            stage = self._make_layer(ls, planes, n, stride, rates[:n])
            rates = rates[n:]
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)

        self.num_features = widths[-1] * self.block.expansion
        self.avgpool = ls.adaptive_avg_pool2d((1, 1))
        self.flatten = ls.flatten(1)
        self.num_classes = num_classes
        self.fc = self._make_classifier(num_classes)
        self._init_weights(zero_init_last)
        self.default_cfg: dict = {}

    # ----------------------------------------------------------------- building
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

    def _make_layer(
        self, ls: LayerSet, planes: int, blocks: int, stride: int, rates: Sequence[float]
    ) -> nn.Module:
        out_planes = planes * self.block.expansion
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

    def _init_weights(self, zero_init_last: bool) -> None:
        # torchvision's init: He (fan-out) for convs, unit-gamma BNs; the fc
        # keeps nn.Linear's default.
        for m in self.modules():
            if isinstance(m, self.layer_set.conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, self.layer_set.batch_norm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            zero_init_last_bn(self)

    # ----------------------------------------------------------------- API
    @property
    def stages(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.stage_names]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised classifier for ``num_classes``."""
        self.num_classes = num_classes
        self.fc = self._make_classifier(num_classes)
        self.default_cfg = {**self.default_cfg, "num_classes": num_classes, "class_names": None}

    @property
    def backbone(self) -> Backbone:
        """The image-embedding model: everything but ``fc`` (shares its modules)."""
        return Backbone(self)

    @property
    def head(self) -> nn.Module:
        """The class model: one linear layer over the pooled embedding."""
        return self.fc

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )

    def _stem(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = self.normalize(x)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """One feature map per stage (strides 4/8/16/32 for the ImageNet nets)."""
        x = self._stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, before pooling."""
        x = self._stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool a feature map; return the embedding (``pre_logits``) or the logits."""
        x = self.flatten(self.avgpool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class Backbone(nn.Module):
    """The image → embedding half of a :class:`ResNet`.

    It shares every module but ``fc`` with the model, so ``backbone.parameters()``
    is exactly what a frozen-backbone fine-tune freezes.
    """

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        for name, child in model.named_children():
            if name != "fc":
                self.add_module(name, child)
        object.__setattr__(self, "_model", model)  # not a submodule: keeps fc out
        self.num_features = model.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self._model.forward_head(self._model.forward_features(x), pre_logits=True)
