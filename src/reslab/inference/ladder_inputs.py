"""What the inference ladder runs on: real evaluation batches, the speed reference, the machine.

Evaluation images are decoded once and reused by every rung, in full batches only (the last
one padded with copies whose labels are ``-1``, which the ladder does not score), so that a
compiled rung never meets a new batch size. The speed reference is torchvision's eager twin
of the architecture where torchvision has one, as in the published comparisons.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from reslab.data.datasets import ImageDataset
from reslab.inference.classes import restrict_class_index
from reslab.inference.cpu_int8 import int8_choice
from reslab.inference.predict import class_names_of
from reslab.models import ResNet

__all__ = ["environment", "int8_facts", "ladder_eval_data", "torchvision_twin"]

EvalData = Callable[[], Iterator[tuple[Tensor, Tensor]]]


def torchvision_twin(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(name, module)``: torchvision's eager fp32 model of ``model``'s architecture (random
    weights, the same number of classes), or ``None`` when torchvision has no such model or
    it could not take the same input (not 3 channels).

    A v1 bottleneck (``resnet50_v1``: stride on the first 1x1) is set against torchvision's
    ``resnet50`` (v1.5): the same layers, the stride one conv later. Only its speed is
    compared.
    """
    import torchvision

    name = getattr(getattr(model, "config", None), "name", None) or ""
    name = name.removesuffix("_v1")
    if getattr(model, "in_chans", 3) != 3 or name not in torchvision.models.list_models(
        module=torchvision.models
    ):
        return None
    twin = torchvision.models.get_model(name, weights=None, num_classes=model.num_classes)
    return f"torchvision {name}", twin.eval()


def ladder_eval_data(
    dataset: ImageDataset, model: ResNet, batch: int, *, limit: int | None = None, seed: int = 0
) -> EvalData:
    """A function giving ``dataset``'s images as ``model`` sees them, in full batches of
    ``batch``, with labels as the model's class indices (``-1``: padding, not scored).

    Args:
        dataset: from :func:`reslab.data.load_dataset` (its classes are matched to the
            model's by name or ImageNet WordNet id: Imagenette's 10 folders score as 10 of
            ImageNet's 1000 classes, 1000-way).
        model: the classifier (resize/crop and class names).
        batch: images per batch.
        limit: use this many images, a seeded random sample (default: all).
        seed: which sample.
    """
    from reslab.data import make_loader

    if limit and limit < len(dataset):
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        dataset = dataset.subset(pick[:limit].sort().values)
    index = torch.tensor(restrict_class_index(class_names_of(model), dataset.class_names))
    loader = make_loader(dataset, batch, train=False, model_cfg=model.default_cfg, workers=0)
    batches = [(x.float(), index[y.cpu()]) for x, y in loader]  # decoded once

    def padded() -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in batches:
            short = batch - len(x)
            if short:
                x = torch.cat([x, x[:1].expand(short, *x.shape[1:])])
                y = torch.cat([y, torch.full((short,), -1, dtype=y.dtype)])
            yield x, y

    return padded


def _version(package: str) -> str | None:
    try:
        module = __import__(package)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def int8_facts() -> dict:
    """The int8 arithmetic the int8 rungs use on this CPU: its class, the flags seen, and
    the weights' bits (7 on x86 without VNNI: see :mod:`~.cpu_int8`), as each rung has it."""
    choice = int8_choice()
    return {
        **choice.to_dict(),
        "onnx-int8": f"weights {choice.weights}, activations uint8",
        "int8": f"weights {choice.weights}, activations uint8",
    }


def environment() -> dict:
    """The facts a ladder's numbers depend on: CPU, its SIMD flags, threads, package versions,
    load average (1, 5, 15 min), the int8 arithmetic chosen for this CPU."""
    from reslab.models.profile import cpu_flags, cpu_name

    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(("avx", "amx", "fma")),
        "int8": int8_facts(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "torchao": _version("torchao"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
