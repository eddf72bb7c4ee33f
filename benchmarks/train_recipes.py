"""Training recipes to a target accuracy, with the time-to-accuracy curve.

What is measured: wall-clock seconds of a whole ``reslab train`` run (data loading, every
epoch's training and test-set validation, the final test evaluation, all file writes) and
the test accuracy after every epoch, for one named recipe. Each run is a fresh process.

Hardware/versions: printed with the results (CPU model, torch threads, torch version); the
numbers in benchmarks/results/fmnist-*.md were taken on the 2-core Intel Xeon (Sapphire
Rapids class, AMX/avx512-bf16) development VM with torch 2.14.1, other heavy jobs excluded
by ``flock /tmp/reslab-heavy.lock``.

Runs: ``--runs N`` repeats (different seeds); medians are reported.

    flock /tmp/reslab-heavy.lock python3 benchmarks/train_recipes.py fmnist-600s
    flock /tmp/reslab-heavy.lock python3 benchmarks/train_recipes.py fmnist-long
    flock /tmp/reslab-heavy.lock python3 benchmarks/train_recipes.py cifar-airplane-bird
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMMON = ["--amp", "--channels-last", "--no-progress"]
RECIPES: dict[str, dict] = {
    "fmnist-600s": {
        "target": 0.93,
        "budget_s": 600,
        "args": shlex.split(
            "--data fashion-mnist --model resnet20 --epochs 10 --bs 256 --lr 0.4 "
            "--label-smoothing 0.1"
        ),
    },
    "fmnist-long": {
        "target": 0.94,
        "budget_s": None,
        "args": shlex.split(
            "--data fashion-mnist --model resnet20 --epochs 30 --bs 256 --lr 0.4 "
            "--label-smoothing 0.1"
        ),
    },
    "cifar-airplane-bird": {
        "target": 0.90,
        "budget_s": None,
        "args": shlex.split(
            "--data cifar10 --classes airplane,bird --model resnet20 --epochs 20 "
            "--bs 128 --lr 0.2 --label-smoothing 0.1"
        ),
        "shared_data": True,
    },
    # He et al. (2015), section 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations,
    # 64k in all (82/123/164 epochs of 391 batches), weight decay 1e-4, momentum 0.9, 4-pixel
    # pad-and-crop + flips, no label smoothing; fp32 as in the paper. Meant for a GPU.
    "cifar10-paper": {
        "target": 1 - 0.0875,
        "budget_s": None,
        "args": shlex.split(
            "--data cifar10 --model resnet20 --epochs 164 --bs 128 --lr 0.1 --wd 1e-4 "
            "--momentum 0.9 --schedule step --milestones 82,123 --label-smoothing 0"
        ),
        "common": ["--no-amp", "--channels-last", "--no-progress"],
        "shared_data": True,
    },
    "readme-short": {
        "target": None,
        "budget_s": None,
        "args": shlex.split("--data fashion-mnist --epochs 3"),
    },
}


def shared_data() -> str | None:
    env = os.environ.get("RESLAB_SHARED_DATA")
    for cand in (env, REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return str(cand)
    return None


def run_once(name: str, seed: int, out: Path) -> dict:
    recipe = RECIPES[name]
    common = recipe.get("common", COMMON)
    args = [*recipe["args"], *common, "--seed", str(seed), "--out", str(out)]
    if recipe.get("shared_data"):
        data = shared_data()
        if data is None:
            sys.exit("shared data folder not found (set RESLAB_SHARED_DATA)")
        args += ["--data-dir", data]  # shown as --data-dir DATA in the results
    cmd = [sys.executable, "-m", "reslab", "train", *args]
    load_before = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        sys.exit(f"run failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())["history"]
    setup = metrics["wall_seconds"] - metrics["train_seconds"]  # loading, final test, writes
    t, curve = setup, []
    for row in history:
        t += row["time"]
        curve.append((row["epoch"], round(t, 1), row["accuracy"]))
    return {
        "cmd": "reslab train " + shlex.join([*recipe["args"], *recipe.get("common", COMMON)]),
        "metrics": metrics,
        "curve": curve,
        "load": (load_before, load_after),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", help="keep the run folders here")
    args = parser.parse_args()
    import torch

    from reslab.models.profile import cpu_name

    results = []
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="reslab-bench-"))
    for i in range(args.runs):
        results.append(run_once(args.recipe, i, base / f"{args.recipe}-seed{i}"))
    recipe = RECIPES[args.recipe]
    accs = [r["metrics"]["test_accuracy"] for r in results]
    walls = [r["metrics"]["wall_seconds"] for r in results]
    print(f"### {args.recipe}\n")
    extra = " --data-dir DATA" if recipe.get("shared_data") else ""
    print(f"- command: `{results[0]['cmd']}{extra} --seed S --out DIR`")
    print(
        f"- CPU: {cpu_name()}, torch threads {results[0]['metrics']['threads']}, "
        f"torch {torch.__version__}, runs: {args.runs} (seeds 0..{args.runs - 1})"
    )
    print(
        f"- test accuracy: median {statistics.median(accs):.4f} "
        f"(all: {', '.join(f'{a:.4f}' for a in accs)})"
    )
    print(
        f"- wall clock (data loading included): median {statistics.median(walls):.0f} s "
        f"(all: {', '.join(f'{w:.0f}' for w in walls)})"
    )
    loads = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in (r["load"] for r in results))
    print(f"- 1-minute load average before/after each run (2 cores; other users' jobs): {loads}")
    print(
        f"- training samples/s: median "
        f"{statistics.median(r['metrics']['samples_per_s'] for r in results):.0f}"
    )
    if recipe["target"] is not None:
        ok = statistics.median(accs) >= recipe["target"]
        budget = recipe["budget_s"]
        in_time = budget is None or statistics.median(walls) <= budget
        print(
            f"- target: >= {recipe['target']:.2f}"
            + (f" in <= {budget} s" if budget else "")
            + f": {'met' if ok and in_time else 'NOT met'}"
        )
    print("\nTime to accuracy (run with seed 0; seconds since the command started):\n")
    print("| epoch | seconds | test accuracy |\n|---:|---:|---:|")
    for epoch, t, acc in results[0]["curve"]:
        print(f"| {epoch} | {t:.0f} | {acc:.4f} |")


if __name__ == "__main__":
    main()
