"""Why does (or doesn't) fastbook's ordering show? One change at a time to the book budget.

Trains chosen steps of ``reslab experiment fastbook --budget book`` (the chapter's recipe:
128 px crops of 160 px presized Imagenette, batch 128, Adam at 3e-3, one-cycle, 5 epochs) with
exactly one thing changed per variant, same seeds, and prints each variant's accuracy next to
the unchanged recipe's:

* ``book``           the recipe as is;
* ``lr=X``           another peak learning rate;
* ``no-batchzero``   the residual branches' last BatchNorm starts at gamma 1, not 0;
* ``fastai-init``    fastai's initialisation instead of torchvision's: a conv followed by a
                     ReLU Kaiming-uniform (fan-in), the others (a block's second conv, the
                     1x1 shortcut conv) PyTorch's default; reslab: Kaiming-normal (fan-out);
* ``min-scale=X``    random-resized crops of X-100 % of the area (1: flips only);
* ``no-augment``     no crops, no flips (the whole presized image resized to 128 px);
* ``epochs=N``       longer training.

Each variant is an ordinary run folder under ``--out``; finished runs are skipped when the
script runs again (so it can be stopped and resumed).

    flock /tmp/reslab-heavy.lock python3 benchmarks/fastbook_ablation.py --steps 1,2 \\
        --variants book,no-batchzero,lr=1e-2 --seeds 0 --data-dir ../shared/data --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

import reslab.recipes.train as train_recipe
from reslab.files import atomic_write_json, atomic_write_text
from reslab.recipes.fastbook import FastbookConfig, fastbook_runs
from reslab.recipes.train import run_training
from reslab.runs import read_metrics


def variant_config(cfg, variant: str):
    """The run's TrainConfig with one change, and the model overrides it needs."""
    if variant == "book":
        return cfg, {}
    if variant == "no-batchzero":
        return cfg, {"zero_init_last": False}
    if variant == "fastai-init":
        return cfg, {"__init__": fastai_init}
    if variant == "no-augment":
        return dataclasses.replace(cfg, augment=False), {}
    name, _, value = variant.partition("=")
    changes = {"lr": ("lr", float), "min-scale": ("min_scale", float), "epochs": ("epochs", int)}
    if name not in changes:
        raise SystemExit(f"unknown variant {variant!r}")
    field, kind = changes[name]
    return dataclasses.replace(cfg, **{field: kind(value)}), {}


def fastai_init(model: torch.nn.Module) -> None:
    """Re-initialise the convs as fastai's ``ConvLayer`` does (biases: there are none)."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            # reslab names a conv followed by a ReLU conv1 (blocks, plain layers) or puts it in
            # the stem; a block's conv2 and its shortcut's 1x1 conv have no activation.
            if name.endswith("conv1") or name.startswith(("stem", "conv1")):
                torch.nn.init.kaiming_uniform_(m.weight)
            else:
                m.reset_parameters()


def train_variant(cfg, overrides: dict, out: Path) -> dict:
    finished = read_metrics(out) if out.is_dir() else None
    if finished is not None:
        return finished.to_dict()
    real = train_recipe.create_model

    overrides = dict(overrides)
    init = overrides.pop("__init__", None)

    def create_model(*args, **kwargs):
        model = real(*args, **{**kwargs, **overrides})
        if init is not None:
            with torch.no_grad():
                init(model)
        return model

    train_recipe.create_model = create_model
    try:
        return run_training(dataclasses.replace(cfg, out=str(out), overwrite=True)).to_dict()
    finally:
        train_recipe.create_model = real


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="1,2")
    p.add_argument("--variants", default="book,no-batchzero")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--data", default="imagenette")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None, help="(smoke tests) epochs per run")
    p.add_argument("--bs", type=int, default=None, help="(smoke tests) batch size")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    base = FastbookConfig(budget="book", steps=steps, seeds=max(seeds) + 1, data=args.data,
                          data_dir=args.data_dir, epochs=args.epochs, bs=args.bs,
                          progress=False)  # fmt: skip
    rows = []
    for run in fastbook_runs(base):
        if run.labels["seed"] not in seeds:
            continue
        for variant in args.variants.split(","):
            cfg, overrides = variant_config(run.config, variant)
            folder = Path(args.out) / f"{run.name}-{variant}"
            metrics = train_variant(cfg, overrides, folder)
            row = {**run.labels, "variant": variant, "accuracy": metrics["test_accuracy"],
                   "seconds": metrics["wall_seconds"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "| step | model | variant | accuracy % (mean over seeds) | seeds |",
        "|---|---|---|---|---|",
    ]
    for step in steps:
        for variant in args.variants.split(","):
            accs = [r["accuracy"] for r in rows if r["step"] == step and r["variant"] == variant]
            model = next(r["model"] for r in rows if r["step"] == step)
            lines.append(f"| {step} | {model} | {variant} | {100 * statistics.fmean(accs):.2f} "
                         f"| {len(accs)} |")  # fmt: skip
    atomic_write_json(Path(args.out) / "ablation.json", rows)
    atomic_write_text(Path(args.out) / "ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
