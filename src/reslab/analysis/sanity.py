"""The model-randomisation sanity check: does a map depend on what the model learned?

Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018). Re-initialise the
model's layers from the head down, one stage at a time and cumulatively (the *cascading*
randomisation), and compare each method's map of the randomised model with its map of the
trained one by Spearman rank correlation. A map that barely changes while the weights that
made the decision are replaced explains the image (edges, contrast), not the model.

Randomisation works on a deep copy: the model passed in is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["cascade_stages", "randomize_modules", "randomized_cascade", "rank_correlation"]

Stage = tuple[str, list[str]]  # (label, names of the modules it re-initialises)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b``
    (anything of shape ``(N, ...)``, flattened per row).

    Ties get their average rank. A row that is constant in ``a`` or ``b`` has no ranking to
    share: its correlation is 0.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    ra = torch.stack([_average_ranks(row) for row in a.flatten(1).double()])
    rb = torch.stack([_average_ranks(row) for row in b.flatten(1).double()])
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    denom = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    num = (ra * rb).sum(1)
    return torch.where(denom > 0, num / torch.where(denom > 0, denom, 1), 0.0)


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor; equal values share the mean of their ranks."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)  # the highest rank of each distinct value
    return (last - (counts - 1) / 2)[inverse]


def cascade_stages(model: nn.Module) -> list[Stage]:
    """The order of the cascading randomisation: ``(label, module names)`` per step.

    For a model with ``stage_names`` (every reslab ResNet): the head (the modules with
    parameters after the last stage, ``fc``), then each stage from the last to the first,
    then the stem (those before the first stage). Any other model: its direct children
    that hold parameters, last first.
    """
    children = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    stages = list(getattr(model, "stage_names", None) or [])
    names = [n for n, _ in children]
    if not stages or not all(s in names for s in stages):
        return [(n, [n]) for n in reversed(names)]
    first, last = names.index(stages[0]), names.index(stages[-1])
    order: list[Stage] = []
    if names[last + 1 :]:
        order.append(("head", names[last + 1 :]))
    order += [(n, [n]) for n in reversed(names[first : last + 1]) if n in stages]
    if names[:first]:
        order.append(("stem", names[:first]))
    return order


def randomize_modules(model: nn.Module, names: Sequence[str], seed: int = 0) -> nn.Module:
    """Re-initialise, in place, every sub-module of the named modules of ``model`` that
    has its own parameters, with the module's own ``reset_parameters()`` (a BatchNorm's
    running statistics too), drawn from a generator seeded with ``seed``; the global
    random state is left as it was. Returns ``model``."""
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(f"no module named {unknown[0]!r} in {type(model).__name__}")
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name in names:
            for sub in modules[name].modules():
                if not any(True for _ in sub.parameters(recurse=False)):
                    continue
                reset = getattr(sub, "reset_parameters", None)
                if reset is None:
                    raise ValueError(
                        f"{type(sub).__name__} in {name!r} has parameters but no "
                        "reset_parameters(); it cannot be re-initialised"
                    )
                with torch.no_grad():
                    reset()
    return model


def randomized_cascade(
    model: nn.Module, stages: Sequence[Stage] | None = None, seed: int = 0
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(label, model)`` after re-initialising each stage in turn, cumulatively:
    the first model has the head random, the last has every stage random.

    The models are one deep copy of ``model``, changed between yields (use each before
    asking for the next); ``model`` itself is never touched. Stage ``i`` is drawn with the
    seed ``seed + i``.
    """
    stages = list(stages) if stages is not None else cascade_stages(model)
    if not stages:
        raise ValueError(f"{type(model).__name__} has no module with parameters to randomise")
    clone = copy.deepcopy(model)
    for i, (label, names) in enumerate(stages):
        randomize_modules(clone, names, seed + i)
        yield label, clone
