"""How much of `reslab train`'s epoch is the data loader: the same Learner (compile + bf16 +
channels-last, as `--recipe fmnist-fast` trains) over the real in-memory loader and over the
same 80 batches made beforehand, alternately in one process, two epochs each after a warm-up.

    flock /tmp/reslab-heavy.lock python3 benchmarks/loader_gap.py [--runs 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from reslab.data import load_dataset, make_loader
from reslab.recipes import subset
from reslab.recipes.train import build_model_for_data
from reslab.recipes.train_bench import learner_epoch, learner_for_path, parse_paths
from reslab.recipes.train_config import TrainConfig

BATCHES = 80  # per epoch (20,480 Fashion-MNIST images at batch 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--path", default="compile+bf16+cl")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = TrainConfig(data="fashion-mnist", out=".", model="resnet20", bs=256)
    train = subset(load_dataset("fashion-mnist", "train", progress=False), BATCHES * 256, 0)
    device = torch.device("cpu")
    loader = make_loader(train, 256, train=True, device=device, seed=0, workers=0)
    made = list(loader.batches(0))
    model = build_model_for_data(cfg, train, device)
    path = parse_paths(args.path)[0]
    sides = {
        "premade": learner_for_path(copy.deepcopy(model), made, path),
        "loader": learner_for_path(copy.deepcopy(model), loader, path),
    }

    def rate(learn) -> float:
        start = time.perf_counter()
        learner_epoch(learn)
        return BATCHES * 256 / (time.perf_counter() - start)

    for learn in sides.values():
        rate(learn)  # warm-up (compilation)
    for r in range(args.runs):
        rates = {name: round(rate(learn)) for name, learn in sides.items()}
        print(f"run {r}: samples/s {rates}", flush=True)


if __name__ == "__main__":
    main()
