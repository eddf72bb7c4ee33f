"""Read and write state dicts safely: safetensors, or torch files with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from reslab.files import atomic_write_bytes

__all__ = [
    "WeightsError",
    "read_safetensors_metadata",
    "read_safetensors_shapes",
    "read_state_dict",
    "refusal",
    "write_safetensors",
]


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, corrupt or mismatched."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a safetensors header (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:  # safetensors raises several types for bad headers
        raise WeightsError(
            f"{path}: corrupt or truncated safetensors file ({_first_line(err)})"
        ) from None


def read_safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, from the header alone (nothing is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as err:
        raise WeightsError(
            f"{path}: corrupt or truncated safetensors file ({_first_line(err)})"
        ) from None


def write_safetensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` (contiguous CPU copies) and string ``metadata`` atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load tensors from ``.safetensors`` or a torch ``.pth/.pt/.bin`` file (never unpickling code).

    Torch files that wrap the weights (``{"state_dict": …}`` or ``{"model": …}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise WeightsError(
                f"{path}: corrupt or truncated safetensors file ({_first_line(err)})"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{path}: cannot read as torch weights ({refusal(err)})") from None
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    return obj


def refusal(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to turn the
    protection off (``weights_only=False`` would run whatever code the file carries)."""
    text = _first_line(err)
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        return "it holds pickled Python objects, which reslab never loads (only tensors)"
    return text
