"""What ``reslab analyze landscape|gradients`` run on: one model (``MODEL``, ``MODEL@TAG``,
``CKPT``, ``RUN_DIR``) or the runs of a degradation experiment folder, each with its labels
(arm, depth, seed, run); a fresh twin of a model for measurements at initialisation; and the
images the analyses use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reslab.cli import CliError
from reslab.data import load_dataset, make_loader
from reslab.models import ResNet
from reslab.recipes import subset
from reslab.recipes.degradation import ARMS
from reslab.recipes.degradation_results import finished_runs
from reslab.runs import names
from reslab.weights import create_model, resolve_model, resolve_spec_path

__all__ = [
    "Target",
    "arm_targets",
    "at_init",
    "data_images",
    "is_experiment",
    "model_targets",
]


@dataclass
class Target:
    """One network to analyse: its label, the spec that builds it, its labels for tables and
    figures, and whether it is measured at initialisation (built fresh with ``seed``)."""

    label: str
    spec: str
    labels: dict[str, Any] = field(default_factory=dict)
    init: bool = False
    seed: int = 0

    def build(self) -> ResNet:
        if not self.init:
            return resolve_model(self.spec)
        if resolve_spec_path(self.spec) is not None or "@" in self.spec:
            return at_init(resolve_model(self.spec), self.seed)  # a trained model's twin
        torch.manual_seed(self.seed)
        template, options = ARMS.get(str(self.labels.get("arm")), (self.spec, {}))
        return create_model(template.format(depth=self.labels.get("depth")), **options)


def at_init(model: ResNet, seed: int) -> ResNet:
    """A freshly initialised network of ``model``'s configuration (its init scheme, input
    normalisation and classes), from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return ResNet.from_config(model.config)


def is_experiment(spec: str) -> bool:
    path = Path(spec)
    return path.is_dir() and (path / names.RECIPE).is_file() and (path / names.RUNS_DIR).is_dir()


def _pick(values: list | None, value) -> bool:
    return values is None or value in values


def experiment_targets(
    folder: str, arms: list[str] | None, depths: list[int] | None, seeds: list[int] | None
) -> list[Target]:
    """The finished runs of a degradation experiment, filtered by arm, depth and seed."""
    runs = finished_runs(folder)
    chosen = [
        r
        for r in runs
        if _pick(arms, r["arm"]) and _pick(depths, r["depth"]) and _pick(seeds, r["seed"])
    ]
    if not chosen:
        have = sorted({(r["arm"], r["depth"], r["seed"]) for r in runs})
        raise CliError(f"{folder}: no run matches the arms, depths and seeds asked (has {have})")
    order = {a: i for i, a in enumerate(ARMS)}
    chosen.sort(key=lambda r: (r["depth"], order.get(r["arm"], 99), r["seed"]))
    return [
        Target(
            f"{r['arm']}-{r['depth']}",
            str(r["path"]),
            {k: r[k] for k in ("arm", "depth", "seed", "run")},
            seed=r["seed"],
        )
        for r in chosen
    ]


def model_targets(
    specs: list[str], arms: list[str] | None, depths: list[int] | None, seeds: list[int] | None
) -> list[Target]:
    """Targets for each spec: an experiment folder's runs, or the model the spec names."""
    out = []
    for spec in specs:
        if is_experiment(spec):
            out += experiment_targets(spec, arms, depths, seeds)
        else:
            out.append(Target(spec, spec, {"seed": (seeds or [0])[0]}, seed=(seeds or [0])[0]))
    return out


def arm_targets(arms: list[str], depths: list[int], seeds: list[int]) -> list[Target]:
    """Fresh networks of each arm (as ``reslab experiment degradation`` builds them), depth
    and seed."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise CliError(f"--arms: unknown {', '.join(unknown)}; expected {', '.join(ARMS)}")
    out = []
    for depth in depths:
        for arm in arms:
            template = ARMS[arm][0].format(depth=depth)
            for seed in seeds:
                labels = {"arm": arm, "depth": depth, "seed": seed}
                out.append(Target(f"{arm}-{depth}", template, labels, init=True, seed=seed))
    return out


def data_images(
    model: ResNet, data: str, split: str, data_dir: str | None, limit: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of ``limit`` images (0–1, at the model's input size) and their
    labels; one-line errors when the data does not fit the model."""
    ds = load_dataset(data, split, data_dir=data_dir, progress=False)
    if ds.num_channels != model.in_chans:
        raise CliError(
            f"the model takes {model.in_chans}-channel images; {data} has {ds.num_channels}"
        )
    if len(ds.class_names) != model.num_classes:
        raise CliError(
            f"the model scores {model.num_classes} classes; {data} has {len(ds.class_names)}"
        )
    loader = make_loader(
        subset(ds, limit, seed), 250, train=False, model_cfg=model.default_cfg, workers=0
    )
    images, labels = zip(*loader)
    return torch.cat(images).cpu(), torch.cat(labels).cpu()
