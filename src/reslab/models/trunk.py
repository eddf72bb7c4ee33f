"""The stem-and-stages forward pass that :class:`~reslab.models.ResNet` and its
:class:`Backbone` share, written so that PyTorch's program tools accept it.

``torch.fx`` (and torchvision's ``create_feature_extractor``) traces it symbolically,
``torch.jit.script`` compiles it, ``torch.export`` and ``torch.compile(fullgraph=True)``
capture it whole. That rules out a few Python habits:

* no branching on a tensor's shape in traced code: the input check is :func:`check_images`,
  a function FX records as one opaque call (``torch.fx.wrap``) that still raises
  ``ValueError`` when the graph runs;
* the stages are found with ``named_children`` (TorchScript unrolls that loop at compile time;
  it cannot ``getattr`` a name from a list);
* the input channel count the check needs is a plain ``int`` attribute, not read through the
  model's config (a dataclass TorchScript cannot compile).
"""

from typing import TYPE_CHECKING

import torch
import torch.fx
from torch import Tensor, nn

__all__ = ["Backbone", "Trunk", "check_images"]


def check_images(x: Tensor, in_chans: int) -> Tensor:
    """``x`` itself if it is a batch ``(N, in_chans, H, W)``; otherwise a ``ValueError``.

    Returning ``x`` keeps the check in FX graphs: a node whose output is used is never
    removed as dead code (torchvision's feature extractor prunes unused nodes). In a
    TorchScript module the error surfaces as ``torch.jit.Error`` naming ``builtins.ValueError``.
    """
    if x.dim() != 4 or x.shape[1] != in_chans:
        # An if statement, not a conditional expression: TorchScript compiles only this branch.
        if torch.jit.is_scripting():  # noqa: SIM108
            got = str(x.shape)
        else:
            got = str(tuple(x.shape))
        raise ValueError(f"expected images of shape (N, {in_chans}, H, W), got {got}")
    return x


# FX records calls to check_images as one node instead of tracing its shape test.
torch.fx.wrap("check_images")


class Trunk(nn.Module):
    """A module with ``normalize``, ``conv1``, ``bn1``, ``relu``, ``maxpool`` and stage
    children (named in :attr:`stage_names`), taking ``input_chans``-channel images."""

    __constants__ = ["stage_names"]  # TorchScript: a constant, so the loops below fold away
    stage_names: list[str]
    input_chans: int
    if TYPE_CHECKING:  # for the type checker only: TorchScript reads class annotations
        num_features: int
        normalize: nn.Module
        conv1: nn.Module
        bn1: nn.Module
        relu: nn.Module
        maxpool: nn.Module
        avgpool: nn.Module
        flatten: nn.Module

    def forward_stem(self, x: Tensor) -> Tensor:
        """Normalisation, stem convolution(s) and max-pool: the input of the first stage."""
        x = check_images(x, self.input_chans)
        x = self.normalize(x)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x)

    def features(self, x: Tensor) -> list[Tensor]:
        """One feature map per stage (strides 4/8/16/32 for the ImageNet nets)."""
        x = self.forward_stem(x)
        maps: list[Tensor] = []
        for name, stage in self.named_children():
            if name in self.stage_names:
                x = stage(x)
                maps.append(x)
        return maps

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, before pooling."""
        x = self.forward_stem(x)
        for name, stage in self.named_children():
            if name in self.stage_names:
                x = stage(x)
        return x


class Backbone(Trunk):
    """The image → embedding half of a :class:`~reslab.models.ResNet`.

    It shares every module but ``fc`` with the model, so ``backbone.parameters()``
    is exactly what a frozen-backbone fine-tune freezes.
    """

    def __init__(self, model: Trunk) -> None:
        super().__init__()
        for name, child in model.named_children():
            if name != "fc":
                self.add_module(name, child)
        self.stage_names = list(model.stage_names)
        self.input_chans = model.input_chans
        self.num_features: int = model.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.flatten(self.avgpool(self.forward_features(x)))
