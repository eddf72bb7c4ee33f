"""A/B: `reslab train` of an older commit against this working tree, alternately, same data
and seed.

What is measured: training samples/s of whole `reslab train` runs (the median over a run's
epochs of the samples/s its history records: training batches only, so a compile warm-up in the
first epoch does not count), and the wall clock of each run. Side A is the code of ``--base``
(default ``ed84cb7``, the commit before the device-sync-free Learner), extracted with ``git
archive`` into a temporary folder and run from there with its own default path; side B is this
tree with ``--b-args`` (default ``--compile``: the fastest correct CPU path, compile + bf16 where
native + channels-last). Runs alternate A, B, B, A, … so drift of the machine hits both alike.

    flock /tmp/reslab-heavy.lock python3 benchmarks/train_ab.py --runs 2
    python3 benchmarks/train_ab.py --runs 1 --epochs 1 --train-limit 2000   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMON = "--data fashion-mnist --model resnet20 --bs 256 --lr 0.4 --no-progress --no-report"


def extract(commit: str, into: Path) -> Path:
    """The ``src/`` tree of ``commit``, extracted under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_once(src: Path, args: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "reslab", "train", *args, "--out", str(out)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed ({shlex.join(cmd)}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())["history"]
    rates = [row["samples_per_s"] for row in history]
    return {
        "samples_per_s": statistics.median(rates),
        "epoch_rates": rates,
        "wall_s": round(wall, 1),
        "test_accuracy": metrics["test_accuracy"],
        "path": metrics.get(
            "train_path", f"amp={metrics.get('amp')} cl={metrics.get('channels_last')}"
        ),
        "load_before": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="ed84cb7", help="side A's commit")
    parser.add_argument("--b-args", default="--compile", help="side B's extra train options")
    parser.add_argument("--runs", type=int, default=2, help="runs per side")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-limit", type=int, default=20000, help="training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import torch

    from reslab.models.profile import cpu_flags, cpu_name

    common = shlex.split(COMMON) + ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    common += ["--train-limit", str(args.train_limit)]
    tmp = Path(tempfile.mkdtemp(prefix="reslab-ab-"))
    sides = {
        "A": (extract(args.base, tmp / "base"), common),
        "B": (REPO / "src", common + shlex.split(args.b_args)),
    }
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    results: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(args.runs):
        for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
            src, side_args = sides[side]
            res = run_once(src, side_args, tmp / f"{side}{r}")
            results[side].append(res)
            rate, wall, acc = res["samples_per_s"], res["wall_s"], res["test_accuracy"]
            print(f"{side} run {r}: {rate:.0f} samples/s, {wall:.0f} s wall, test acc {acc:.4f}, "
                  f"{res['path']}", flush=True)  # fmt: skip
    a = statistics.median(x["samples_per_s"] for x in results["A"])
    b = statistics.median(x["samples_per_s"] for x in results["B"])
    report = {
        "command": f"python3 benchmarks/train_ab.py --runs {args.runs} --epochs {args.epochs} "
        f"--train-limit {args.train_limit} --base {args.base} --b-args {shlex.quote(args.b_args)}",
        "A": {"code": args.base, "args": shlex.join(sides["A"][1]), "runs": results["A"]},
        "B": {
            "code": f"{head}{' + uncommitted src changes' if dirty else ''}",
            "args": shlex.join(sides["B"][1]),
            "runs": results["B"],
        },  # fmt: skip
        "ratio_B_over_A": round(b / a, 3),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(("avx512_bf16", "amx", "avx2", "avx512f")),
        "torch": torch.__version__,
    }
    print(f"median samples/s: A {a:.0f} ({args.base}), B {b:.0f} (this tree "
          f"{args.b_args}); B/A = {b / a:.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
