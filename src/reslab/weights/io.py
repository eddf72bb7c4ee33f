"""Read and write state dicts safely: safetensors, or torch files with ``weights_only=True``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["WeightsError", "atomic_write", "read_state_dict", "read_safetensors_metadata"]


class WeightsError(ValueError):
    """A weights file that cannot be used: unreadable, corrupt or mismatched."""


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp (and safetensors' writer) make the file private (0600); give it the mode
        # open() would have, so checkpoints and exports can be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:  # safetensors raises several types for bad headers
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from None


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
            raise WeightsError(f"{path}: corrupt or truncated safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: cannot read as torch weights ({msg})") from None
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    return obj
