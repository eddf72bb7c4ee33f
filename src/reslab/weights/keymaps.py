"""Key maps from other libraries' state-dict names to reslab's.

reslab's names are torchvision's (``conv1``, ``bn1``, ``layerN.i.convK``, ``downsample.0/1``,
``fc``) plus timm's for the deep stem (``conv1.0``…``conv1.6``) and the ResNet-D shortcut
(``downsample.1/2`` behind a parameter-free pool at ``downsample.0``), so torchvision and timm
ResNet state dicts load as they are. This module handles the wrappers around them.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["to_reslab_keys"]

_PREFIXES = ("module.", "model.", "_orig_mod.")  # DDP, Lightning/EMA wrappers, torch.compile


def to_reslab_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip wrapper prefixes (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``…)."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        out[key] = value
    return out
