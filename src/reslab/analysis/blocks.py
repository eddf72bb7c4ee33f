"""Looking inside a trained residual or plain network, block by block.

* **Lesions** (Veit et al. 2016, "Residual networks behave like ensembles of relatively
  shallow networks"): the test accuracy with one block's residual branch removed — the block
  returns ``relu(shortcut(x))``, which is ``x`` for an identity shortcut after a ReLU. A plain
  block has no shortcut: it becomes an identity where its input and output shapes agree, and is
  skipped (marked) where they do not.
* **Residual ratio**: the mean over images of ``‖F(x)‖ / ‖x‖``, the size of what a block adds
  relative to what it receives (``F`` is the branch before the addition).
* **Stage probes**: a linear classifier trained on each stage's average-pooled features
  (computed once, as the fine-tuning feature cache does) — how class evidence builds up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reslab.analysis.heads import fit_head, head_accuracy
from reslab.models import ResNet
from reslab.transfer import extract_features

__all__ = [
    "BlockReport",
    "StageProbe",
    "blocks_of",
    "lesioned",
    "probe_stages",
    "residual_ratios",
    "study_blocks",
]


@dataclass
class BlockReport:
    """One block: its name, whether it changes shape, and what removing its branch costs."""

    name: str
    downsample: bool
    lesion_accuracy: float | None
    residual_ratio: float | None
    note: str = ""


@dataclass
class StageProbe:
    name: str
    probe_accuracy: float


def blocks_of(model: ResNet) -> list[tuple[str, nn.Module]]:
    """``("layer2.3", block)`` for every block, input to output."""
    return [
        (f"{stage_name}.{i}", block)
        for stage_name, stage in zip(model.stage_names, model.stages)
        for i, block in enumerate(stage.children())
    ]


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _changes_shape(block: Any) -> bool:  # a block of reslab.models.blocks, or one like them
    """Whether the block's output differs in shape from its input (stride or channels)."""
    convs = [m for m in block.modules() if hasattr(m, "in_channels") and hasattr(m, "stride")]
    if getattr(block, "downsample", None) is not None:
        return True
    strided = any(_pair(conv.stride) != (1, 1) for conv in convs)
    return strided or convs[0].in_channels != block.last_bn().num_features


def can_lesion(block: nn.Module) -> bool:
    """A residual block always can (it keeps its shortcut); a plain one only without a shape
    change (it becomes the identity)."""
    return bool(block.residual) or not _changes_shape(block)


@contextlib.contextmanager
def lesioned(block: nn.Module) -> Iterator[None]:
    """Within the ``with``, ``block`` returns its shortcut alone (``relu(shortcut(x))``), or
    its input for a plain block; the model is restored afterwards."""
    if not can_lesion(block):
        raise ValueError("a plain block that changes shape cannot be removed")

    def shortcut_only(module: Any, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0]
        if not module.residual:
            return x
        identity = x if module.downsample is None else module.downsample(x)
        return torch.relu(identity)

    handle = block.register_forward_hook(shortcut_only)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def _accuracy(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> float:
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(1, total)


class _RatioMeter:
    """Forward hooks summing ``‖F(x)‖ / ‖x‖`` per image for one block."""

    def __init__(self, block: Any) -> None:  # a block with last_bn(), as reslab's
        self.total = 0.0
        self.inputs: Tensor | None = None  # the input norms, until the block's last BN runs
        self.handles = [
            block.register_forward_pre_hook(self.remember_input),
            block.last_bn().register_forward_hook(self.add_ratio),
        ]

    def remember_input(self, module: nn.Module, inputs: tuple) -> None:
        self.inputs = inputs[0].flatten(1).norm(dim=1)

    def add_ratio(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        assert self.inputs is not None  # the pre-hook ran first
        ratio = output.flatten(1).norm(dim=1) / self.inputs.clamp_min(1e-12)
        self.total += float(ratio.sum())

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def residual_ratios(model: ResNet, batches: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Mean ``‖F(x)‖ / ‖x‖`` per block over the images (``F``: the branch's last BN output)."""
    meters = {name: _RatioMeter(block) for name, block in blocks_of(model)}
    count = 0
    try:
        for x, _ in batches:
            model(x)
            count += len(x)
    finally:
        for meter in meters.values():
            meter.remove()
    return {name: meter.total / max(1, count) for name, meter in meters.items()}


class StageFeatures(nn.Module):
    """The average-pooled output of stage ``index`` of ``model`` (a probe's input)."""

    def __init__(self, model: ResNet, index: int) -> None:
        super().__init__()
        self.model, self.index = model, index

    def forward(self, x: Tensor) -> Tensor:
        x = self.model.forward_stem(x)
        for stage in self.model.stages[: self.index + 1]:
            x = stage(x)
        return x.mean((2, 3))


def probe_stages(
    model: ResNet, train_loader, test_loader, *, epochs: int = 10, seed: int = 0
) -> list[StageProbe]:
    """Fit a linear classifier on each stage's pooled training features; its test accuracy."""
    probes = []
    for i, name in enumerate(model.stage_names):
        stage = StageFeatures(model, i)
        train = extract_features(stage, train_loader, progress=False)
        test = extract_features(stage, test_loader, progress=False)
        x, y = train.features[:, 0], train.labels
        torch.manual_seed(seed)
        head = nn.Linear(x.shape[1], model.num_classes)
        fit_head(head, x, y, epochs=epochs, lr=1e-2, seed=seed)
        probes.append(StageProbe(name, head_accuracy(head, test.features[:, 0], test.labels)))
    return probes


def study_blocks(model: ResNet, test_loader, train_loader=None) -> dict:
    """Base accuracy, lesion accuracy and residual ratio per block, and (with a training
    loader) stage probes: the content of ``blocks.json``."""
    model.eval()
    batches = list(test_loader)
    base = _accuracy(model, batches)
    ratios = residual_ratios(model, batches)
    reports = []
    for name, block in blocks_of(model):
        changes = _changes_shape(block)
        if can_lesion(block):
            with lesioned(block):
                accuracy, note = _accuracy(model, batches), ""
        else:
            accuracy, note = None, "plain block that changes shape: not removable"
        reports.append(BlockReport(name, changes, accuracy, ratios.get(name), note))
    probes = probe_stages(model, train_loader, test_loader) if train_loader is not None else []
    return {
        "base_accuracy": base,
        "blocks": [asdict(r) for r in reports],
        "stages": [asdict(p) for p in probes],
    }
