"""Explanations that are measured: how faithful each class-map method is, and whether its
maps depend on the model at all.

- :func:`deletion_insertion`: Petsiuk et al.'s deletion and insertion curves (RISE, BMVC
  2018) of every method and of a random map (:mod:`reslab.analysis.faithfulness`).
- :func:`randomization_check`: Adebayo et al.'s cascading model randomisation (NeurIPS
  2018), the rank correlation of each method's maps with the trained model's
  (:mod:`reslab.analysis.sanity`).
- :func:`explanations_report`: both as one JSON-able dict, the content of
  ``explanations.json``.

The maps explain each image's top-1 class of the trained model (or the ``target`` given),
the same class at every step of the randomisation. The model is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reslab.analysis.faithfulness import (
    BLUR_SIGMA,
    curve_auc,
    perturbation_curves,
    random_maps,
    step_counts,
)
from reslab.analysis.gradcam import CAM_METHODS, eval_mode, gradcam
from reslab.analysis.sanity import Stage, cascade_stages, randomized_cascade, rank_correlation

__all__ = [
    "FLAG_CORRELATION",
    "BASELINE_MAPS",
    "RANDOM",
    "RANDOM_COARSE",
    "Faithfulness",
    "RandomizationCheck",
    "deletion_insertion",
    "explanations_report",
    "layer_grid",
    "randomization_check",
]

RANDOM = "random"  # the random-map baseline, reported beside the methods
# Random values on the Grad-CAM layer's grid, upsampled: blobs of Grad-CAM's size in random
# places. Tells "the map found the right region" from "coherent regions hurt less than
# scattered pixels".
RANDOM_COARSE = "random-coarse"
BASELINE_MAPS = (RANDOM, RANDOM_COARSE)
# A method is flagged when its maps of the fully randomised model still have a mean
# Spearman rank correlation of at least this with the trained model's maps (unitless).
FLAG_CORRELATION = 0.5

Progress = Callable[[], None] | None


def _targets(model: nn.Module, images: Tensor, target: Tensor | Sequence[int] | None) -> Tensor:
    if target is not None:
        t = torch.as_tensor(target, dtype=torch.long).flatten()
        if t.numel() == 1:
            t = t.expand(len(images))
        if t.shape != (len(images),):
            raise ValueError(f"expected {len(images)} target classes, got {t.numel()}")
        return t.clone()
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(chunk).argmax(1).cpu() for chunk in images.split(64)])


def _maps(model: nn.Module, images: Tensor, target: Tensor, method: str, layer, batch: int):
    chosen = None if method == "saliency" else layer
    return gradcam(model, images, target, chosen, method=method, batch_size=batch).cpu()


def layer_grid(
    model: nn.Module, images: Tensor, layer: str | None = None
) -> tuple[int, int] | None:
    """The spatial size of Grad-CAM's layer (``layer``, default the last stage) for these
    images, or None when the model names no stages and no layer is given."""
    name = layer or (list(getattr(model, "stage_names", None) or []) or [None])[-1]
    module = dict(model.named_modules()).get(name) if name else None
    if module is None:
        return None
    shapes: list[tuple[int, ...]] = []

    def keep(module: nn.Module, inputs: tuple, out: object) -> None:
        if isinstance(out, Tensor):
            shapes.append(tuple(out.shape))

    handle = module.register_forward_hook(keep)
    try:
        with eval_mode(model), torch.no_grad():
            model(images[:1])
    finally:
        handle.remove()
    return (shapes[0][-2], shapes[0][-1]) if shapes and len(shapes[0]) == 4 else None


def _check(images: Tensor, methods: Sequence[str]) -> list[str]:
    if not isinstance(images, Tensor) or images.dim() != 4 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected a non-empty batch of images (N, C, H, W), got {shape}")
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in CAM_METHODS]
    if bad or not methods:
        raise ValueError(
            f"unknown method {bad[0]!r}; expected some of {', '.join(CAM_METHODS)}"
            if bad
            else "no method to measure"
        )
    return methods


# ----------------------------------------------------------------------------- deletion
@dataclass
class Faithfulness:
    """Deletion and insertion curves: ``deletion[m]`` / ``insertion[m]`` are ``(N, S+1)``
    class probabilities at the ``fractions`` of pixels changed, for each method ``m`` and
    the random baselines (:data:`RANDOM`, and :data:`RANDOM_COARSE` where Grad-CAM's layer
    is known)."""

    methods: list[str]
    fractions: list[float]
    deletion: dict[str, Tensor]
    insertion: dict[str, Tensor]
    target: Tensor
    baseline: str
    steps: int

    def auc(self, kind: str) -> dict[str, Tensor]:
        """Per method, the ``(N,)`` areas under the ``kind`` (deletion/insertion) curves."""
        curves = {"deletion": self.deletion, "insertion": self.insertion}[kind]
        return {m: curve_auc(self.fractions, c) for m, c in curves.items()}


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    *,
    methods: Sequence[str] = CAM_METHODS,
    steps: int = 20,
    baseline: str = "blur",
    layer: str | None = None,
    seed: int = 0,
    target: Tensor | Sequence[int] | None = None,
    batch_size: int = 64,
    progress: Progress = None,
) -> Faithfulness:
    """Deletion and insertion curves of each method's maps and of random maps (``seed``):
    per-pixel noise (:data:`RANDOM`) and noise on Grad-CAM's layer grid, upsampled
    (:data:`RANDOM_COARSE`; left out when the layer is unknown).

    Args:
        model: a classifier taking ``images`` (0–1, its normalisation inside).
        images: ``(N, C, H, W)``.
        methods: some of :data:`~reslab.analysis.CAM_METHODS`.
        steps, baseline: see :func:`~reslab.analysis.faithfulness.perturbation_curves`.
        layer: Grad-CAM's layer (default: the last stage).
        target: the class per image (default: the model's top-1).
        progress: called once per method done.
    """
    methods = _check(images, methods)
    n, _, h, w = images.shape
    target = _targets(model, images, target)
    step_counts(h * w, steps)  # refuse bad steps before any work
    grid = layer_grid(model, images, layer)
    randoms = {RANDOM: random_maps(n, h, w, seed)}
    if grid is not None:
        randoms[RANDOM_COARSE] = random_maps(n, h, w, seed, grid=grid)
    deletion: dict[str, Tensor] = {}
    insertion: dict[str, Tensor] = {}
    for method in [*methods, *randoms]:
        if method in randoms:
            maps = randoms[method]
        else:
            maps = _maps(model, images, target, method, layer, min(batch_size, 32))
        for kind, curves in (("deletion", deletion), ("insertion", insertion)):
            curves[method] = perturbation_curves(
                model, images, maps, target, kind=kind, steps=steps, baseline=baseline,
                batch_size=batch_size,
            )  # fmt: skip
        if progress:
            progress()
    fractions = [k / (h * w) for k in step_counts(h * w, steps)]
    names = [*methods, *randoms]
    return Faithfulness(names, fractions, deletion, insertion, target, baseline, steps)


# ----------------------------------------------------------------------------- randomisation
@dataclass
class RandomizationCheck:
    """The cascading randomisation: ``correlation[m]`` is ``(len(stages), N)``, the rank
    correlation of method ``m``'s map of each image after each step with its map of the
    trained model; ``agreement[i]`` the fraction of images whose top-1 class after step
    ``i`` is still the target; ``maps[m]`` is ``(len(stages) + 1, E, H, W)``, the maps of
    the first ``E`` images, the trained model's first."""

    methods: list[str]
    stages: list[Stage]
    correlation: dict[str, Tensor]
    agreement: list[float]
    maps: dict[str, Tensor]
    target: Tensor

    def flagged(self, threshold: float = FLAG_CORRELATION) -> list[str]:
        """Methods whose maps of the fully randomised model still correlate, on average,
        at least ``threshold`` with the trained model's: they do not depend on the model."""
        return [m for m in self.methods if float(self.correlation[m][-1].mean()) >= threshold]


def randomization_check(
    model: nn.Module,
    images: Tensor,
    *,
    methods: Sequence[str] = CAM_METHODS,
    layer: str | None = None,
    seed: int = 0,
    target: Tensor | Sequence[int] | None = None,
    stages: Sequence[Stage] | None = None,
    examples: int = 1,
    batch_size: int = 32,
    progress: Progress = None,
) -> RandomizationCheck:
    """Re-initialise ``model``'s stages from the head down, cumulatively (on a copy), and
    compare each method's maps with the trained model's.

    Args:
        stages: ``(label, module names)`` in the order to randomise (default:
            :func:`~reslab.analysis.sanity.cascade_stages`); step ``i`` is drawn with the
            seed ``seed + i``.
        examples: images whose maps are kept for a figure.
        progress: called once per step done (the trained model's maps included).
        Others as :func:`deletion_insertion`.
    """
    methods = _check(images, methods)
    target = _targets(model, images, target)
    stages = list(stages) if stages is not None else cascade_stages(model)
    original = {m: _maps(model, images, target, m, layer, batch_size) for m in methods}
    if progress:
        progress()
    keep = slice(0, max(0, examples))
    kept = {m: [original[m][keep]] for m in methods}
    correlation: dict[str, list[Tensor]] = {m: [] for m in methods}
    agreement = []
    for _, randomized in randomized_cascade(model, stages, seed):
        top1 = _targets(randomized, images, None)
        agreement.append(float((top1 == target).double().mean()))
        for m in methods:
            maps = _maps(randomized, images, target, m, layer, batch_size)
            correlation[m].append(rank_correlation(original[m], maps).float())
            kept[m].append(maps[keep])
        if progress:
            progress()
    return RandomizationCheck(
        methods, stages, {m: torch.stack(c) for m, c in correlation.items()}, agreement,
        {m: torch.stack(k) for m, k in kept.items()}, target,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the report
def _stats(values: Tensor) -> dict[str, float]:
    v = values.double()
    std = float(v.std()) if v.numel() > 1 else 0.0
    return {"mean": float(v.mean()), "std": std}


def _curve_record(faith: Faithfulness, kind: str) -> dict[str, Any]:
    curves = {"deletion": faith.deletion, "insertion": faith.insertion}[kind]
    out = {}
    for method, auc in faith.auc(kind).items():
        c = curves[method].double()
        std = c.std(0) if len(c) > 1 else torch.zeros(c.shape[1])
        out[method] = {
            "auc": _stats(auc),
            "auc_per_image": [round(float(a), 6) for a in auc],
            "curve_mean": [round(float(x), 6) for x in c.mean(0)],
            "curve_std": [round(float(x), 6) for x in std],
        }
    return out


def explanations_report(
    faith: Faithfulness | None,
    check: RandomizationCheck | None,
    **about: Any,
) -> dict[str, Any]:
    """The content of ``explanations.json``: ``about`` (model, data, image indices, …)
    first, then ``faithfulness`` (per curve and method: AUC mean ± std over images, per
    image, and the mean curve) and ``randomization`` (per step: the modules re-initialised,
    top-1 agreement, per method the rank correlation mean ± std; and the flagged methods).
    """
    report: dict[str, Any] = {"version": 1, **about}
    if faith is not None:
        report["faithfulness"] = {
            "paper": "Petsiuk et al., RISE, BMVC 2018",
            "images": len(faith.target),
            "target": [int(t) for t in faith.target],
            "methods": faith.methods,
            "baseline": faith.baseline,
            "blur_sigma_fraction": BLUR_SIGMA if faith.baseline == "blur" else None,
            "steps": faith.steps,
            "fractions": [round(f, 6) for f in faith.fractions],
            "deletion": _curve_record(faith, "deletion"),
            "insertion": _curve_record(faith, "insertion"),
        }
    if check is not None:
        steps = []
        for i, (label, modules) in enumerate(check.stages):
            corr = {m: _stats(check.correlation[m][i]) for m in check.methods}
            steps.append(
                {"randomized": label, "modules": modules, "top1_agreement": check.agreement[i],
                 "correlation": corr}
            )  # fmt: skip
        report["randomization"] = {
            "paper": "Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018",
            "images": len(check.target),
            "methods": check.methods,
            "measure": "Spearman rank correlation with the trained model's map",
            "cascade": "cumulative, from the head down",
            "steps": steps,
            "flag_threshold": FLAG_CORRELATION,
            "flagged": check.flagged(),
        }
    return _finite(report)


def _finite(value: Any) -> Any:
    """NaN and infinities as None: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
