"""torch's batch norm against reslab's compiled-path batch norm under torch.compile, side by
side in one process (CPU; bf16 autocast, channels-last, as `reslab train --compile` runs).

Two measurements, each alternating the two sides so drift hits both alike:
1. the normalising pass alone (no grad) on ResNet-20's first-stage activation shape: the
   per-channel ``rsqrt(var / n + eps)`` written inline (as inductor's lowering fuses it)
   against ``scale``/``shift`` read from memory;
2. whole training epochs of ResNet-20 on Fashion-MNIST (the bare loop of `reslab bench
   train`, `--path`, default compile+bf16+cl), torch's batch norm against reslab's.

    flock /tmp/reslab-heavy.lock python3 benchmarks/compiled_batch_norm.py --json out.json
    # an AVX2-only CPU, imitated (float32: no native bf16), with a compile cache of its own:
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 TORCHINDUCTOR_CACHE_DIR=/tmp/ic-avx2 \
        python3 benchmarks/compiled_batch_norm.py --path compile+cl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from reslab.layers.compiled_batch_norm import restore_batch_norm

REPO = Path(__file__).resolve().parents[1]
BATCH = 256  # images per step, as the A/B and fmnist-fast
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "TORCHINDUCTOR_CACHE_DIR")


def ms_per_call(fn: Callable[[], object], calls: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def activation(channels: int, side: int) -> torch.Tensor:
    x = torch.randn(BATCH, channels, side, side).to(torch.bfloat16)
    return x.contiguous(memory_format=torch.channels_last)


def normalising_pass(rounds: int) -> dict:
    x, count = activation(16, 28), BATCH * 28 * 28
    mean, var, weight, bias = (torch.rand(1, 16, 1, 1) for _ in range(4))
    scale, shift = weight * torch.rsqrt(var + 1e-5), bias - mean * weight
    inline = torch.compile(
        lambda x, m, v, w, b: torch.relu((x - m) * torch.rsqrt(v / count + 1e-5) * w + b).to(
            x.dtype
        )
    )
    read = torch.compile(lambda x, s, b: torch.relu(x * s + b).to(x.dtype))
    sides: dict[str, list[float]] = {"inline rsqrt": [], "scale/shift read": []}
    with torch.no_grad():
        for _ in range(rounds):
            sides["inline rsqrt"].append(
                ms_per_call(lambda: inline(x, mean, var, weight, bias), 30)
            )
            sides["scale/shift read"].append(ms_per_call(lambda: read(x, scale, shift), 30))
    return {k: stats(v) for k, v in sides.items()}


def resnet20_epochs(rounds: int, batches: int, path_name: str) -> dict:
    from reslab.data import load_dataset, make_loader
    from reslab.recipes import subset
    from reslab.recipes.train import build_model_for_data
    from reslab.recipes.train_bench import BareLoop, parse_paths
    from reslab.recipes.train_config import TrainConfig
    from reslab.training import keep_freed_host_memory

    keep_freed_host_memory()  # as `reslab train` on the CPU
    cfg = TrainConfig(data="fashion-mnist", out=".", model="resnet20", bs=BATCH)
    train = subset(load_dataset("fashion-mnist", "train", progress=False), batches * BATCH, 0)
    cpu = torch.device("cpu")
    made = list(make_loader(train, BATCH, train=True, device=cpu, seed=0, workers=0).batches(0))
    model = build_model_for_data(cfg, train, cpu)
    path = parse_paths(path_name)[0]
    loops = {"torch": BareLoop(copy.deepcopy(model), path), "reslab": BareLoop(model, path)}
    bns = [m for m in loops["torch"].model.modules() if isinstance(m, nn.BatchNorm2d)]
    restore_batch_norm(bns)  # (the bare loop swaps them on the compiled path): torch's again
    for loop in loops.values():  # compile, then settle
        loop.epoch(made)
        loop.epoch(made)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(rounds):
        for name in loops if r % 2 == 0 else reversed(loops):
            start = time.perf_counter()
            loops[name].epoch(made)
            rates[name].append(len(made) * BATCH / (time.perf_counter() - start))
    return {
        "samples_per_s": {k: stats(v) for k, v in rates.items()},
        "ratio_reslab_over_torch": round(
            statistics.mean(rates["reslab"]) / statistics.mean(rates["torch"]), 3
        ),
        "batches_per_epoch": len(made),
    }


def stats(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 3),
        "std": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--path", default="compile+bf16+cl",
                        help="the training path of the epochs (compile+cl: float32)")  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    from reslab.models.profile import cpu_flags, cpu_name

    report = {
        "command": f"python3 benchmarks/compiled_batch_norm.py --rounds {args.rounds} "
        f"--batches {args.batches} --path {args.path}",
        "environment": {k: os.environ[k] for k in ISA_VARIABLES if k in os.environ},
        "commit": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),  # fmt: skip
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(("avx512_bf16", "amx", "avx2", "avx512f")),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "statistic": "mean ± std over rounds; ms per call (1), samples/s (2)",
        "normalising_pass_ms_16x28": normalising_pass(args.rounds),
        "resnet20_epoch": resnet20_epochs(args.rounds, args.batches, args.path),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
