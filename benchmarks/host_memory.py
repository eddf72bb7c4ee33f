"""Kept host memory against glibc's default policy, in alternating processes: one with
``RESLAB_HOST_MEMORY=system`` (malloc as it comes), one with the default ``keep``, ``--pairs``
times, the pairs alternating which goes first (glibc's settings hold for a process's life, so
the two cannot share one).

``--what bench`` (default): each process runs `reslab bench train resnet20` on one path
(default compile + bf16 + channels-last, as `--recipe fmnist-fast` trains): the Learner's and
the bare loop's samples/s and the Learner's minor page faults per step. ``--what train``: each
process runs `reslab train` (ResNet-20, Fashion-MNIST, 20,000 images, 3 epochs, batch 256,
``--compile``): the median over its epochs of the training samples/s its history records.

    flock /tmp/reslab-heavy.lock python3 benchmarks/host_memory.py --pairs 5
    flock /tmp/reslab-heavy.lock python3 benchmarks/host_memory.py --what train --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


TRAIN = "--data fashion-mnist --model resnet20 --bs 256 --lr 0.4 --epochs 3 --seed 0 --compile "
TRAIN += "--device cpu "
TRAIN += "--train-limit 20000 --no-progress --no-report"


def one_train(policy: str, args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkdtemp(prefix="reslab-host-memory-")) / "run"
    cmd = [sys.executable, "-m", "reslab", "train", *TRAIN.split(), "--out", str(out)]
    env = {**os.environ, "RESLAB_HOST_MEMORY": policy, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"reslab train failed ({policy}):\n{proc.stderr[-3000:]}")
    rates = [
        row["samples_per_s"] for row in json.loads((out / "history.json").read_text())["history"]
    ]
    return {"policy": policy, "learner": statistics.median(rates), "epoch_rates": rates}


def one_process(policy: str, args: argparse.Namespace) -> dict:
    if args.what == "train":
        return one_train(policy, args)
    cmd = [sys.executable, "-m", "reslab", "bench", "train", "resnet20", "--data", args.data,
           "--paths", args.path, "--runs", str(args.runs), "--batches", str(args.batches),
           "--device", "cpu", "--json"]  # fmt: skip
    env = {**os.environ, "RESLAB_HOST_MEMORY": policy, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench train failed ({policy}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    if result["environment"]["host_memory"] != policy.replace("keep", "kept"):
        sys.exit(f"asked for {policy}, the process ran with {result['environment']['host_memory']}")
    row = result["rows"][0]
    return {
        "policy": policy,
        "learner": row["learner_median"],
        "bare": row["bare_median"],
        "faults_per_step": row["faults_per_step"],
        "host_memory": result["environment"]["host_memory"],
        "environment": result["environment"],
    }


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.0f} ± {sd:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("bench", "train"), default="bench")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--path", default="compile+bf16+cl")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--runs", type=int, default=3, help="timed epochs per side and process")
    parser.add_argument("--batches", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    runs: list[dict] = []
    for pair in range(args.pairs):
        order = ("system", "keep") if pair % 2 == 0 else ("keep", "system")
        for policy in order:
            res = one_process(policy, args)
            runs.append(res)
            detail = (f"bare {res['bare']:.0f} samples/s, {res['faults_per_step']} faults/step"
                      if args.what == "bench" else f"epochs {res['epoch_rates']}")  # fmt: skip
            print(f"pair {pair} {policy:>6}: Learner {res['learner']:.0f}, {detail}", flush=True)
    by = {p: [r for r in runs if r["policy"] == p] for p in ("system", "keep")}
    ratios = [
        k["learner"] / s["learner"] for s, k in zip(by["system"], by["keep"], strict=True)
    ]  # pairs in the order they ran
    summary: dict = {
        "command": f"python3 benchmarks/host_memory.py --what {args.what} --pairs {args.pairs}"
        + (
            f" --path {args.path} --runs {args.runs} --batches {args.batches} --data {args.data}"
            if args.what == "bench"
            else ""
        ),
        "learner_samples_per_s": {p: mean_std([r["learner"] for r in by[p]]) for p in by},
        "keep_over_system_per_pair": [round(r, 3) for r in ratios],
        "keep_over_system_mean": round(statistics.mean(ratios), 3),
        "pairs_keep_faster": sum(r > 1 for r in ratios),
        "runs": runs,
    }
    if args.what == "bench":
        summary["bare_samples_per_s"] = {p: mean_std([r["bare"] for r in by[p]]) for p in by}
        summary["faults_per_step"] = {p: [r["faults_per_step"] for r in by[p]] for p in by}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
