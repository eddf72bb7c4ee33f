"""GPU: one ResNet-20 epoch of `reslab train` on the 50,000 CIFAR-10 images against the bare loop.

Target: the epoch of ``reslab train`` within 1.5x of a bare PyTorch loop's time for
the same 50,000 images on the same GPU.

1. ``reslab bench train resnet20 --data cifar10 --device cuda --batch 128 --batches 390``: the
   Learner and the bare loop, interleaved in one process, 390 batches (49,920 images) per timed
   epoch, on the paths eager (fp32), channels-last, bf16 + channels-last and compile +
   channels-last; the bare loop's epoch time is ``49,920 / its samples/s``.
2. ``reslab train --data cifar10 --model resnet20 --bs 128 --epochs 3 --device cuda`` (the
   paper's batch, fp32 + channels-last, no AMP, as the degradation budget ``paper`` trains),
   and the same with ``--compile``: the epoch times from ``history.json`` (training, the
   test-set pass and the per-epoch bookkeeping; the median of the 3 epochs, so compilation in
   epoch 1 does not count).

Writes everything into ``--out`` (JSON) and prints the ratios.

    python3 benchmarks/gpu_train_epoch.py --data-dir shared/data --out $OUT/epoch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = 50_000
PATHS = "eager,channels-last,bf16+channels-last,compile+channels-last"


def reslab(*args: str, capture: bool = False) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "reslab", *args], env=env, text=True,
                          capture_output=capture)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"reslab {' '.join(args)} failed:\n{(proc.stderr or '')[-3000:]}")
    return proc.stdout or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where CIFAR-10 is")
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--runs", type=int, default=3, help="timed epochs per side (bench)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--data", "cifar10", "--data-dir", args.data_dir]
    bench = json.loads(
        reslab(
            "bench",
            "train",
            "resnet20",
            *data,
            "--device",
            "cuda",
            "--batch",
            "128",
            "--batches",
            "390",
            "--runs",
            str(args.runs),
            "--paths",
            PATHS,
            "--json",
            capture=True,
        )  # fmt: skip
    )
    (out / "bench-train.json").write_text(json.dumps(bench, indent=2))
    train = ["train", *data, "--model", "resnet20", "--bs", "128", "--epochs", "3", "--lr", "0.1"]
    train += ["--device", "cuda", "--no-amp", "--no-progress", "--no-report", "--overwrite"]
    epochs = {}
    for name, extra in (("eager", []), ("compile", ["--compile"])):
        run = out / f"train-{name}"
        reslab(*train, *extra, "--out", str(run))
        history = json.loads((run / "history.json").read_text())["history"]
        epochs[name] = {
            "epoch_s": statistics.median(row["time"] for row in history),
            "train_s": statistics.median(IMAGES / row["samples_per_s"] for row in history),
        }
    rows = {row["path"]: row for row in bench["rows"]}
    bare_cl = IMAGES / rows["channels-last"]["bare_median"]
    bare_best = min(IMAGES / row["bare_median"] for row in bench["rows"])
    summary = {
        "bare_epoch_s_channels_last": round(bare_cl, 2),
        "bare_epoch_s_fastest_path": round(bare_best, 2),
        "reslab_train": epochs,
        "ratio_epoch_vs_bare_channels_last": round(epochs["eager"]["epoch_s"] / bare_cl, 2),
        "ratio_training_part_vs_bare_channels_last": round(epochs["eager"]["train_s"] / bare_cl, 2),
        "ratio_compiled_epoch_vs_bare_fastest": round(epochs["compile"]["epoch_s"] / bare_best, 2),
        "target": "reslab train's epoch <= 1.5x the bare loop's",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for row in bench["rows"]:
        print(f"{row['path']:<28} bare {row['bare_median']:9.0f}/s  Learner "
              f"{row['learner_median']:9.0f}/s  ratio {row['ratio']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
