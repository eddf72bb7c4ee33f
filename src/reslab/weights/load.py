"""Load weights into a model by name, with one clear error for any mismatch."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from reslab.weights.adapt import adapt_state_dict_channels
from reslab.weights.io import WeightsError, read_state_dict

__all__ = ["StateDictMismatch", "check_state_dict", "load_weights", "resolve_state_dict"]


class StateDictMismatch(WeightsError):
    """Missing, unexpected or wrong-shape keys between a state dict and a model."""


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor], source: str = "") -> None:
    """Raise :class:`StateDictMismatch` listing every key that does not fit ``model``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
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


def resolve_state_dict(source: str | Path | Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Turn a source (state dict, file path, URL or tag) into tensors and a printable name."""
    if isinstance(source, Mapping):
        return dict(source), "state dict"
    text = str(source)
    from reslab.weights.sources import fetch_source  # URLs and tags

    path = fetch_source(text)
    return read_state_dict(path), str(path)


def load_weights(
    model: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = True,
    drop_head_if_mismatched: bool = False,
) -> nn.Module:
    """Load weights into ``model`` in place and return it.

    Args:
        source: a state dict, a ``.safetensors``/``.pth`` file (read with
            ``weights_only=True``), a reslab checkpoint, a URL or a known tag.
        strict: every key must match (names and shapes); otherwise load what fits.
        drop_head_if_mismatched: keep the model's own ``fc`` when the weights' classifier has
            another number of classes (fine-tuning on a new label set).

    3-channel stem weights are adapted to the model's ``in_chans`` (summed for one channel,
    repeated and rescaled for more).
    """
    state_dict, name = resolve_state_dict(source)
    from reslab.weights.keymaps import to_reslab_keys

    state_dict = to_reslab_keys(state_dict)
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
        check_state_dict(model, state_dict, name)
    else:
        state_dict = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state_dict, strict=strict)
    return model
