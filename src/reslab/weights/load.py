"""Load weights into a model by name, with one clear error for any mismatch."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from reslab.weights.adapt import adapt_state_dict_channels
from reslab.weights.files import WeightsError
from reslab.weights.keymaps import to_reslab_keys

__all__ = ["StateDictMismatch", "check_shapes", "check_state_dict", "load_state_dict_into"]


class StateDictMismatch(WeightsError):
    """Missing, unexpected or wrong-shape keys between a state dict and a model."""


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "") -> None:
    """Raise :class:`StateDictMismatch` listing every key that does not fit ``model``."""
    theirs = {k: tuple(v.shape) for k, v in state_dict.items()}
    check_shapes(model, theirs, source)


def check_shapes(model: nn.Module, shapes: Mapping[str, tuple[int, ...]], source: str = "") -> None:
    """Like :func:`check_state_dict`, from tensor shapes alone (e.g. a safetensors header),
    so a file that does not fit is refused before anything is loaded. ``model`` may live on
    the meta device."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = sorted(
        f"{k} {shapes[k]} != {own[k]}" for k in set(own) & set(shapes) if own[k] != shapes[k]
    )
    if missing or unexpected or wrong:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
            )
            if keys
        ]
        where = f" from {source}" if source else ""
        raise StateDictMismatch(f"weights{where} do not fit the model: " + "; ".join(parts))


def _with_batch_counters(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Files saved before PyTorch 0.4.1 (torchvision's first ResNet-50, …) have no BatchNorm
    ``num_batches_tracked``; torch then starts the counter at 0, and so does this."""
    for key in model.state_dict():
        layer, _, leaf = key.rpartition(".")
        old_format = key not in state_dict and f"{layer}.running_mean" in state_dict
        if leaf == "num_batches_tracked" and old_format:
            state_dict[key] = torch.zeros((), dtype=torch.long)
    return state_dict


def load_state_dict_into(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    strict: bool = True,
    drop_head_if_mismatched: bool = False,
    source: str = "",
) -> nn.Module:
    """Load tensors into ``model`` in place (wrapper prefixes stripped, stem adapted) and
    return it; see :func:`reslab.load_weights` for the arguments."""
    state_dict = _with_batch_counters(to_reslab_keys(dict(state_dict)), model)
    in_chans = getattr(model, "in_chans", None)
    if in_chans is not None:
        state_dict = adapt_state_dict_channels(state_dict, in_chans)
    own = model.state_dict()
    if drop_head_if_mismatched:
        for key in ("fc.weight", "fc.bias"):
            if key not in own:
                state_dict.pop(key, None)  # the model has no classifier (num_classes=0)
            elif key in state_dict and own[key].shape != state_dict[key].shape:
                state_dict[key] = own[key]
    if strict:
        check_state_dict(model, state_dict, source)
    else:
        state_dict = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state_dict, strict=strict)
    return model
