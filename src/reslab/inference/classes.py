"""Match a data set's classes to a model's: ImageNet WordNet ids, class names or indices.

Used to evaluate a 1000-class ImageNet model on a subset such as Imagenette
(``reslab eval … --restrict-classes``): only the logits of the data's classes compete.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["imagenet_wnids", "restrict_class_index"]

_WNID = re.compile(r"^n\d{8}$")
_ASSET = Path(__file__).resolve().parents[1] / "assets" / "imagenet_wnids.txt"


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted, as in ILSVRC-2012)."""
    return tuple(_ASSET.read_text().split())


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name.strip().lower())


def restrict_class_index(
    model_classes: Sequence[str], data_classes: Sequence[str], spec: str = "auto"
) -> list[int]:
    """The model's class index of each data class, in the data's label order.

    Args:
        model_classes: the model's class names (1000 ImageNet names for an ImageNet model).
        data_classes: the data set's class names (folder names, e.g. ``n01440764``).
        spec: ``"auto"`` matches each data class as an ImageNet WordNet id (1000-class models)
            or by name (case and ``_``/space insensitive); otherwise a comma-separated list of
            model class indices or names, one per data class.
    """
    n = len(model_classes)
    by_name: dict[str, int] = {}
    for i, name in enumerate(model_classes):
        by_name.setdefault(_norm(name), i)
    if spec == "auto":
        wanted = list(data_classes)
    else:
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        if len(wanted) != len(data_classes):
            raise ValueError(
                f"--restrict-classes lists {len(wanted)} classes but the data has "
                f"{len(data_classes)} ({', '.join(data_classes[:5])}…)"
            )
    index: list[int] = []
    for want, data_name in zip(wanted, data_classes):
        if want.isdigit() and spec != "auto":
            i = int(want)
            if not 0 <= i < n:
                raise ValueError(f"class index {i} out of range for a {n}-class model")
        elif _WNID.match(want) and n == 1000:
            i = imagenet_wnids().index(want) if want in imagenet_wnids() else -1
        else:
            i = by_name.get(_norm(want), -1)
        if i < 0:
            raise ValueError(
                f"data class {data_name!r} matches none of the model's {n} classes; pass "
                "--restrict-classes with one model class index or name per data class"
            )
        if i in index:
            raise ValueError(f"two data classes map to the model's class {i}")
        index.append(i)
    return index
