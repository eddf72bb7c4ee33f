"""The measurements behind docs/why.md and BENCHMARKS.md's "Why residual connections work":
run under the heavy-job lock, one step after another, on a copy of a finished degradation
experiment (``reslab experiment degradation --arms plain,residual,plain-dirac --seeds 3``).

    flock /tmp/reslab-heavy.lock python benchmarks/why_resnets.py SRC_EXP WORK_DIR \\
        [--steps gradients-init,gradients-trained,blocks,landscape-1d,landscape-2d,report]

Copies SRC_EXP to WORK_DIR/exp (without training-state files), then runs the ``reslab``
commands below on it, each timed, with the 1-minute load average at its start, into
WORK_DIR/why-log.json. Every step's command is printed first, so it can be re-run by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = ["--data", "cifar10", "--data-dir", "/work/shared/data"]
LANDSCAPE_2D_SECONDS = 18 * 60  # per network: the 2-D grid is chosen to fit (budget: 20 min)
LANDSCAPE_2D_MAX_STEPS = 25  # the finest grid used even on a fast machine


def grid_2d(exp: Path) -> str:
    """The odd number of steps per axis whose steps² points of the 56-layer nets fit in
    LANDSCAPE_2D_SECONDS, from the 1-D landscape's time per point on this machine."""
    report = json.loads((exp / "landscape-1d" / "landscape.json").read_text())
    per_point = max(
        e["seconds"] / len(e["result"]["alphas"]) for e in report["entries"] if e["depth"] == 56
    )
    steps = int((LANDSCAPE_2D_SECONDS / per_point) ** 0.5)
    steps = min(steps if steps % 2 else steps - 1, LANDSCAPE_2D_MAX_STEPS)
    print(f"  2-D grid: {steps} x {steps} ({per_point:.2f} s per point of 1-D)", flush=True)
    return str(max(steps, 3))


def steps(exp: Path) -> dict[str, list[list[str]]]:
    """Each step: the ``reslab`` argument lists it runs."""
    runs = [
        f"{arm}{depth}-s0" for depth in (20, 56) for arm in ("plain", "residual", "plain-dirac")
    ]
    return {
        "gradients-init": [["analyze", "gradients", "--depths", "20,56,110", "--arms",
                            "plain,residual,plain-dirac", "--seeds", "3",
                            "--out", str(exp / "gradients-init")]],
        "gradients-trained": [["analyze", "gradients", str(exp), "--weights", "both", *DATA,
                               "--out", str(exp / "gradients-trained")]],
        "blocks": [["analyze", "blocks", str(exp / "runs" / run), *DATA, "--limit", "2000",
                    "--probe-images", "0"] for run in runs],
        "landscape-1d": [["analyze", "landscape", str(exp), *DATA, "--limit", "1000",
                          "--steps", "21", "--hessian", "--out", str(exp / "landscape-1d")]],
        "landscape-2d": [["analyze", "landscape", str(exp), *DATA, "--depths", "56", "--dims",
                          "2", "--steps", "GRID", "--limit", "1000",
                          "--out", str(exp / "landscape-2d")]],
        "report": [["report", str(exp)]],
    }  # fmt: skip


def _copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    skip = shutil.ignore_patterns("checkpoint.*", ".lock", "*.tmp")
    shutil.copytree(src, dst, ignore=skip)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the finished degradation experiment")
    parser.add_argument("work", type=Path, help="where the copy and the outputs go")
    parser.add_argument("--steps", default=",".join(steps(Path("."))))
    args = parser.parse_args()
    exp = args.work / "exp"
    _copy(args.source, exp)
    log_path = args.work / "why-log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else []
    plan = steps(exp)
    here = Path(__file__).resolve().parents[1]  # $WHY_COMMIT: a snapshot's commit
    commit = os.environ.get("WHY_COMMIT") or subprocess.run(
        ["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True,
        text=True).stdout.strip()  # fmt: skip
    for name in args.steps.split(","):
        for argv in plan[name]:
            argv = [grid_2d(exp) if a == "GRID" else a for a in argv]
            command = [sys.executable, "-m", "reslab", *argv]
            print("$ reslab " + " ".join(argv), flush=True)
            load = os.getloadavg()[0]
            start = time.perf_counter()
            code = subprocess.call(command)
            seconds = time.perf_counter() - start
            log.append({"step": name, "argv": ["reslab", *argv], "exit": code, "commit": commit,
                        "seconds": round(seconds, 1), "load_1min": load,
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})  # fmt: skip
            log_path.write_text(json.dumps(log, indent=2) + "\n")
            print(f"  {name}: exit {code}, {seconds:.0f} s (load {load:.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
