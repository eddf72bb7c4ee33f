"""A model's typed configuration: its architecture, its input normalisation, its data config.

Set once in :class:`~reslab.models.ResNet`'s constructor and frozen; the model changes it only
through named methods (``reset_classifier``, ``set_input_channels``, ``set_data_config``). It
round-trips through JSON, which is how a checkpoint rebuilds any ``ResNet`` from the file alone.
``from_dict`` validates what it reads (unknown keys, types, sane sizes), because a checkpoint
header is input from outside.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ArchConfig", "ConfigError", "DataConfig", "ModelConfig", "Normalization"]

BLOCK_NAMES = ("basic", "bottleneck", "conv")
STEM_TYPES = ("default", "deep", "none")
SHORTCUTS = ("conv", "avg", "pad", "none")
INITS = ("kaiming", "dirac")
# Bounds that no real ResNet reaches; a header beyond them is refused before anything is built.
MAX_CLASSES = 10_000_000
MAX_CHANNELS = 4096
MAX_WIDTH = 65536
MAX_BLOCKS = 10_000
MAX_SIDE = 16384


class ConfigError(ValueError):
    """A model configuration that cannot describe a ResNet (unknown key, bad type or size)."""


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def _ints(name: str, values: Any, low: int, high: int) -> tuple[int, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{name} must be a non-empty list of integers, got {values!r}")
    return tuple(_int(name, v, low, high) for v in values)


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"{name} must be a non-empty list of numbers, got {values!r}")
    return tuple(_float(name, v, -1e6, 1e6) for v in values)


def _check_keys(kind: str, data: Any, cls: type) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{kind} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {kind} option(s): {', '.join(map(str, unknown))}")
    return dict(data)


@dataclass(frozen=True)
class Normalization:
    """``y = (x[:, order] * scale - mean) / std``, applied inside the model (0–1 inputs)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    bgr: bool = False

    def __post_init__(self) -> None:
        mean, std = _floats("normalize.mean", self.mean), _floats("normalize.std", self.std)
        if len(mean) != len(std):
            raise ConfigError(f"normalize has {len(mean)} means but {len(std)} stds")
        if any(s <= 0 for s in std):
            raise ConfigError(f"normalize.std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", _float("normalize.scale", self.scale, 1e-6, 1e6))
        _bool("normalize.bgr", self.bgr)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "bgr": self.bgr,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Normalization:
        return cls(**_check_keys("normalize", data, cls))


@dataclass(frozen=True)
class ArchConfig:
    """The architecture: exactly the arguments of :class:`~reslab.models.ResNet` that shape it."""

    block: str = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    num_classes: int = 1000
    in_chans: int = 3
    stage_widths: tuple[int, ...] = (64, 128, 256, 512)
    groups: int = 1
    width_per_group: int = 64
    width: float = 1.0
    stem_type: str = "default"
    stem_width: int = 32
    small_input: bool = False
    shortcut: str = "conv"
    stride_in_1x1: bool = False
    zero_init_last: bool = False
    drop_path_rate: float = 0.0
    init: str = "kaiming"
    stage_strides: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.block, str):
            raise ConfigError(f"block must be a name, got {self.block!r}")
        set_(self, "layers", _ints("layers", self.layers, 1, MAX_BLOCKS))
        if sum(self.layers) > MAX_BLOCKS:
            raise ConfigError(f"{sum(self.layers)} blocks in all; at most {MAX_BLOCKS}")
        set_(self, "stage_widths", _ints("stage_widths", self.stage_widths, 1, MAX_WIDTH))
        if len(self.layers) != len(self.stage_widths):
            raise ConfigError(
                f"{len(self.layers)} stage depths but {len(self.stage_widths)} stage widths"
            )
        _int("num_classes", self.num_classes, 0, MAX_CLASSES)
        _int("in_chans", self.in_chans, 1, MAX_CHANNELS)
        _int("groups", self.groups, 1, MAX_WIDTH)
        _int("width_per_group", self.width_per_group, 1, MAX_WIDTH)
        set_(self, "width", _float("width", self.width, 1e-3, 64.0))
        _choice("stem_type", self.stem_type, STEM_TYPES)
        _int("stem_width", self.stem_width, 1, MAX_WIDTH)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        _choice("init", self.init, INITS)
        for name in ("small_input", "stride_in_1x1", "zero_init_last"):
            _bool(name, getattr(self, name))
        set_(self, "drop_path_rate", _float("drop_path_rate", self.drop_path_rate, 0.0, 1.0))
        if self.stage_strides is not None:
            set_(self, "stage_strides", _ints("stage_strides", self.stage_strides, 1, 8))
            if len(self.stage_strides) != len(self.layers):
                raise ConfigError(
                    f"{len(self.stage_strides)} stage strides for {len(self.layers)} stages"
                )
        if self.block == "conv" and self.shortcut != "none":
            raise ConfigError("the single-conv block has no shortcut: use shortcut='none'")
        if self.block == "bottleneck":
            self._check_bottleneck_widths()

    def _check_bottleneck_widths(self) -> None:
        # A bottleneck's inner width is int(planes * width_per_group / 64) * groups (as built
        # by the block): it must not round down to 0 channels (a narrow --width on ResNeXt).
        for w in self.stage_widths:
            planes = max(1, int(round(w * self.width)))
            if int(planes * self.width_per_group / 64.0) < 1:
                raise ConfigError(
                    f"width {self.width} leaves a bottleneck of {w} planes with 0 channels "
                    f"per group (width_per_group {self.width_per_group}); use a larger width"
                )

    def kwargs(self) -> dict[str, Any]:
        """The constructor arguments, as :class:`~reslab.models.ResNet` takes them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs().items()}

    @classmethod
    def from_dict(cls, data: Any) -> ArchConfig:
        d = _check_keys("architecture", data, cls)
        _choice("block", d.get("block", "basic"), BLOCK_NAMES)  # never a class from a file
        return cls(**d)


@dataclass(frozen=True)
class DataConfig:
    """The images a model takes and the names of its outputs.

    Args:
        input_size: ``(channels, height, width)`` it was made for.
        mean, std: the input statistics (applied inside the model when it normalises).
        crop_pct: evaluation resizes the short side to ``size / crop_pct``, then centre-crops.
        interpolation: resampling for that resize.
        class_names: one name per output, when known.
        preprocessing: a note on non-standard preprocessing (e.g. Keras "caffe").
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] | None = None
    preprocessing: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        size = _ints("input_size", self.input_size, 1, MAX_SIDE)
        if len(size) != 3:
            raise ConfigError(f"input_size must be (channels, height, width), got {size}")
        set_(self, "input_size", size)
        set_(self, "mean", _floats("mean", self.mean))
        set_(self, "std", _floats("std", self.std))
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, size[0]):
            raise ConfigError(
                f"mean ({len(self.mean)} values) and std ({len(self.std)}) need one value per "
                f"input channel ({size[0]}), or one for all"
            )
        set_(self, "crop_pct", _float("crop_pct", self.crop_pct, 0.05, 1.0))
        _choice("interpolation", self.interpolation, ("bilinear", "bicubic", "nearest"))
        if self.class_names is not None:
            if not isinstance(self.class_names, (list, tuple)) or not all(
                isinstance(n, str) for n in self.class_names
            ):
                raise ConfigError("class_names must be a list of strings")
            set_(self, "class_names", tuple(self.class_names))
        if self.preprocessing is not None and not isinstance(self.preprocessing, str):
            raise ConfigError("preprocessing must be a string")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: Any) -> DataConfig:
        return cls(**_check_keys("data", data, cls))


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model but its weights.

    Args:
        arch: the architecture.
        data: input size, statistics, crop and class names.
        normalize: the normalisation inside the model, or None (it takes normalised input).
        name: the registered name it was built from (None for a hand-built ``ResNet``).
        pretrained: where its weights came from, when loaded.
    """

    arch: ArchConfig = field(default_factory=ArchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    normalize: Normalization | None = None
    name: str | None = None
    pretrained: str | None = None

    def __post_init__(self) -> None:
        names = self.data.class_names
        if names is not None and len(names) != self.arch.num_classes:
            raise ConfigError(
                f"{len(names)} class names for a model with {self.arch.num_classes} outputs"
            )
        if self.normalize is not None and len(self.normalize.mean) != self.arch.in_chans:
            raise ConfigError(
                f"normalisation has {len(self.normalize.mean)} channels but "
                f"in_chans={self.arch.in_chans}"
            )
        if self.data.input_size[0] != self.arch.in_chans:
            raise ConfigError(
                f"input_size {self.data.input_size} does not match in_chans={self.arch.in_chans}"
            )

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch.to_dict(),
            "data": self.data.to_dict(),
            "normalize": None if self.normalize is None else self.normalize.to_dict(),
            "pretrained": self.pretrained,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Read and validate a config written by :meth:`to_dict`; :class:`ConfigError` if bad."""
        d = _check_keys("model config", data, cls)
        for key in ("name", "pretrained"):
            if d.get(key) is not None and not isinstance(d[key], str):
                raise ConfigError(f"{key} must be a string, got {d[key]!r}")
        if "arch" not in d:
            raise ConfigError("no architecture ('arch') in the model config")
        norm = d.get("normalize")
        return cls(
            arch=ArchConfig.from_dict(d["arch"]),
            data=DataConfig.from_dict(d.get("data", {})),
            normalize=None if norm is None else Normalization.from_dict(norm),
            name=d.get("name"),
            pretrained=d.get("pretrained"),
        )

    def flat(self) -> dict[str, Any]:
        """The timm-style flat dict (``input_size``, ``mean``, ``class_names``, …)."""
        return {
            "architecture": self.name,
            **self.data.to_dict(),
            "num_classes": self.arch.num_classes,
            "normalize": None if self.normalize is None else self.normalize.to_dict(),
            "pretrained": self.pretrained,
        }
