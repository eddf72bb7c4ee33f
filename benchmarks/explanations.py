"""Measured explanations of the shipped models: ``reslab analyze explanations`` on each.

Presets (the model, its data, and the number of images chosen so that one run takes about
10 minutes or less on the 2-core development VM; see BENCHMARKS.md):

- ``cifar10``: ``resnet20@reslab-cifar10`` on the CIFAR-10 test JPEGs (``../shared/data``).
- ``fashion-mnist``: ``resnet20@reslab-fashion-mnist`` on the Fashion-MNIST test set.
- ``keras``: ``resnet50_v1@keras-imagenet`` (``reslab weights fetch keras-resnet50``) on
  Imagenette's validation images (``../shared/data``, extracted into the reslab cache once).

Writes ``benchmarks/results/explanations-<preset>[-mean]/``: the command's
``explanations.json``, ``explanations.png`` and ``explanations-cascade.png``, and
``run.json`` (the command, wall time, 1-minute load average at the start, CPU model and
flags, torch version, git commit). ``summary`` writes ``benchmarks/results/explanations.md``
from those folders (``explanations_summary.py``).

    flock /tmp/reslab-heavy.lock python3 benchmarks/explanations.py cifar10 [--images N]
    flock /tmp/reslab-heavy.lock python3 benchmarks/explanations.py cifar10 --baseline mean
    python3 benchmarks/explanations.py summary
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from imagenette_data import imagenette_root, shared_data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
PRESETS = {
    "cifar10": ("resnet20@reslab-cifar10", ["--data", "cifar10", "--data-dir", "SHARED"], 1000),
    "fashion-mnist": (
        "resnet20@reslab-fashion-mnist", ["--data", "fashion-mnist", "--data-dir", FASHION_MNIST],
        1000,
    ),
    "keras": ("resnet50_v1@keras-imagenet", ["--data", "IMAGENETTE"], 24),
}  # fmt: skip


def cpu_facts() -> dict[str, str]:
    model, flags = "", []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        if key.strip() == "flags" and not flags:
            flags = value.split()
    shown = [f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2"))]
    return {"cpu": model, "cpu_flags": " ".join(sorted(shown)), "cores": str(os.cpu_count())}


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = "+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else ""
    return git("rev-parse", "HEAD").strip()[:12] + dirty


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset", choices=[*sorted(PRESETS), "summary"])
    p.add_argument("--images", type=int, help="override the preset's number of images")
    p.add_argument("--baseline", choices=["blur", "mean"], default="blur")
    p.add_argument("--out", type=Path, help="default: benchmarks/results/explanations-PRESET")
    args = p.parse_args()
    if args.preset == "summary":
        from explanations_summary import write_summary

        print(write_summary(RESULTS))
        return
    spec, data, images = PRESETS[args.preset]
    places = {"SHARED": str(shared_data())}
    if "IMAGENETTE" in data:
        places["IMAGENETTE"] = str(imagenette_root(("val",)))
    data = [places.get(a, a) for a in data]
    suffix = "" if args.baseline == "blur" else f"-{args.baseline}"
    out = args.out or RESULTS / f"explanations-{args.preset}{suffix}"
    command = ["reslab", "analyze", "explanations", spec, *data, "--images",
               str(args.images or images), "--baseline", args.baseline, "--out", str(out),
               "--no-progress"]  # fmt: skip
    import torch

    facts = {"command": command, "load_1min": os.getloadavg()[0], **cpu_facts(),
             "torch": torch.__version__, "threads": torch.get_num_threads(),
             "commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    print(json.dumps(facts), flush=True)
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-m", "reslab", *command[1:]], check=True, env=env)
    facts["wall_s"] = round(time.perf_counter() - start, 1)
    (out / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"{args.preset}: {facts['wall_s']} s, load {facts['load_1min']:.2f} at the start")


if __name__ == "__main__":
    main()
