"""Training recipes to a target accuracy, with the time-to-accuracy curve.

What is measured: wall-clock seconds of a whole ``reslab train`` run (data loading, every
epoch's training and test-set validation, the final test evaluation, all file writes) and
the test accuracy after every epoch, for one named recipe. Each run is a fresh process.

Hardware/versions: printed with the results (CPU model, torch threads, torch version); the
numbers in benchmarks/results/fmnist-*.md were taken on the 2-core Intel Xeon (Sapphire
Rapids class, AMX/avx512-bf16) development VM with torch 2.14.1, other heavy jobs excluded
by ``flock /tmp/reslab-heavy.lock``.

Runs: ``--runs N`` repeats (seeds 0..N-1); mean ± std (sample standard deviation) and medians
are reported; a target is judged on the mean accuracy and the mean wall clock of the whole
command (interpreter start-up and report.html included).

    flock /tmp/reslab-heavy.lock python3 benchmarks/train_recipes.py fmnist-fast --runs 3
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from reslab.recipes.train_config import TRAIN_RECIPES  # noqa: E402

COMMON = ["--amp", "--channels-last", "--no-progress"]
# The recipes a user runs by name (`reslab train --recipe NAME`) are declared once, in
# reslab.recipes.train_config.TRAIN_RECIPES; the others are benchmark-only argument lists.
LIBRARY = ("fmnist-fast", "fmnist-600s", "fmnist-long")
RECIPES: dict[str, dict] = {
    **{
        name: {
            "target": TRAIN_RECIPES[name].target,
            "budget_s": TRAIN_RECIPES[name].budget_s,
            "args": ["--recipe", name],
            "common": ["--no-progress"],
        }
        for name in LIBRARY
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
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's reslab
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    command_s = time.perf_counter() - start  # the whole command, report.html included
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
        "command_s": round(command_s, 1),
        "curve": curve,
        "load": (load_before, load_after),
    }


def _mean_std(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


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
    commands = [r["command_s"] for r in results]
    print(f"### {args.recipe}\n")
    extra = " --data-dir DATA" if recipe.get("shared_data") else ""
    print(f"- command: `{results[0]['cmd']}{extra} --seed S --out DIR`")
    print(
        f"- CPU: {cpu_name()}, torch threads {results[0]['metrics']['threads']}, "
        f"torch {torch.__version__}, runs: {args.runs} (seeds 0..{args.runs - 1})"
    )
    print(f"- path: {results[0]['metrics'].get('train_path', '(not recorded)')}")
    print(
        f"- test accuracy: mean {_mean_std(accs, 4)}, median {statistics.median(accs):.4f} "
        f"(all: {', '.join(f'{a:.4f}' for a in accs)})"
    )
    print(
        f"- wall clock of the run (data loading, training, evaluation, files): mean "
        f"{_mean_std(walls, 0)} s, median {statistics.median(walls):.0f} s "
        f"(all: {', '.join(f'{w:.0f}' for w in walls)})"
    )
    print(
        f"- wall clock of the whole command (interpreter start and report.html too): mean "
        f"{_mean_std(commands, 0)} s (all: {', '.join(f'{w:.0f}' for w in commands)})"
    )
    loads = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in (r["load"] for r in results))
    print(f"- 1-minute load average before/after each run (2 cores; other users' jobs): {loads}")
    print(
        f"- training samples/s: median "
        f"{statistics.median(r['metrics']['samples_per_s'] for r in results):.0f}"
    )
    if recipe["target"] is not None:  # on the means over seeds, the whole command's time
        ok = statistics.mean(accs) >= recipe["target"]
        budget = recipe["budget_s"]
        in_time = budget is None or statistics.mean(commands) <= budget
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
