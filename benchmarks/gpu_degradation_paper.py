"""`reslab experiment degradation --budget paper` on one GPU, in 15-minute slots.

The paper's protocol (164 epochs of the 50,000 CIFAR-10 training images, batch 128) for plain and
residual nets of 20, 32, 44, 56 and 110 layers is about 13 ResNet-20 trainings per arm. One small
net at batch 128 keeps a modern GPU busy only a fraction of the time (its step is bound by kernel
launches, BENCHMARKS.md), so this script trains ``--parallel`` runs at once, each its own process
on the one GPU, deepest first (the longest runs start first, so the slots end evenly).

Every run is an ordinary run folder under ``OUT/runs/`` that checkpoints after every epoch, so a
run stopped at the end of a slot loses at most the epoch in progress. ``--deadline`` seconds
after the start the script stops its workers (SIGKILL: the checkpoint pair survives any kill)
and exits; run the same command in the next slot and it resumes the partial runs and starts the
missing ones (finished runs are skipped). Once every run has finished it runs
``reslab experiment degradation`` on the folder, which finds them all finished and writes
``results.json``, ``results.md`` and the figure.

    # one slot (15 minutes of device time: leave about 3 for the machine to start and stop)
    python3 benchmarks/gpu_degradation_paper.py --data-dir DATA --out OUT --deadline 660
    python3 benchmarks/gpu_degradation_paper.py --plan      # the runs and their estimated cost

Memory: a ResNet-110 at batch 128 needs well under 2 GiB, so GPU memory does not limit
``--parallel``; the host's cores do (one Python process per run; ``--threads`` each).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from reslab.recipes.degradation import DegradationConfig, degradation_runs  # noqa: E402
from reslab.recipes.train import resume_config, run_training  # noqa: E402
from reslab.recipes.train_config import TrainConfig  # noqa: E402
from reslab.runs import RunFolder  # noqa: E402

DEPTHS = [20, 32, 44, 56, 110]
ARMS = ["plain", "residual"]
EPOCHS = 164  # the paper budget's


def experiment(args: argparse.Namespace) -> DegradationConfig:
    return DegradationConfig(
        data="cifar10", data_dir=args.data_dir, depths=DEPTHS, arms=ARMS, seeds=args.seeds,
        budget="paper", out=args.out, device="cuda", threads=args.threads, progress=False,
        report=False,
    )  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """Train (or resume) the one run named ``args.worker``, holding only that run's lock (the
    workers share the experiment folder; ``collect`` checks every run against the recipe)."""
    cfg = experiment(args)
    run = next(r for r in degradation_runs(cfg) if r.name == args.worker)
    folder = Path(cfg.out) / "runs" / run.name
    state = RunFolder(folder).state()
    print(f"{run.name}: {state}", flush=True)
    if state == "finished":
        return
    if state == "partial":
        runtime = {"device": run.config.device, "threads": run.config.threads}
        run_training(resume_config(folder, runtime), resume=True)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = {**run.config.to_dict(), "out": str(folder), "overwrite": state == "started"}
    run_training(TrainConfig.from_dict(config))


def epochs_done(folder: Path) -> int:
    history = folder / "history.json"
    return len(json.loads(history.read_text())["history"]) if history.is_file() else 0


def plan(args: argparse.Namespace) -> list:
    """Unfinished runs, deepest first; layer-epochs left, a cost proportional to time."""
    runs = degradation_runs(experiment(args))
    todo = []
    for run in runs:
        folder = Path(args.out) / "runs" / run.name
        if RunFolder(folder).state() != "finished":
            todo.append((run, run.labels["depth"] * (EPOCHS - epochs_done(folder))))
    return sorted(todo, key=lambda item: -item[1])


def launch(args: argparse.Namespace, name: str, logs: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", name, "--out", args.out,
           "--seeds", str(args.seeds), "--threads", str(args.threads)]  # fmt: skip
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = (logs / f"{name}.log").open("a")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def collect(args: argparse.Namespace) -> int:
    depths, arms = ",".join(map(str, DEPTHS)), ",".join(ARMS)
    cmd = [sys.executable, "-m", "reslab", "experiment", "degradation", "--budget", "paper",
           "--data", "cifar10", "--depths", depths, "--arms", arms, "--seeds", str(args.seeds),
           "--device", "cuda", "--no-progress", "--out", args.out]  # fmt: skip
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(cmd, env=env).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/degradation-paper")
    parser.add_argument("--data-dir", help="where CIFAR-10 is (e.g. shared/data)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=6, help="runs at once on the GPU")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per run")
    parser.add_argument("--deadline", type=float, default=660, help="seconds, then stop")
    parser.add_argument("--plan", action="store_true", help="print what is left and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    todo = plan(args)
    total = sum(cost for _, cost in todo)
    print(f"{len(todo)} runs unfinished, {total / 20 / EPOCHS:.1f} ResNet-20 trainings of work")
    for run, cost in todo:
        print(f"  {run.name}: {cost / run.labels['depth']:.0f} epochs left")
    if args.plan:
        return
    start, logs = time.monotonic(), Path(args.out) / "gpu-logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: dict[str, subprocess.Popen] = {}
    queue = [run.name for run, _ in todo]
    while queue or running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{time.monotonic() - start:6.0f} s  {name} exited ({proc.returncode})")
                del running[name]
        if time.monotonic() - start > args.deadline:
            for name, proc in running.items():
                proc.send_signal(signal.SIGKILL)  # the last epoch's checkpoint is kept
                done = epochs_done(Path(args.out) / "runs" / name)
                print(f"deadline: stopped {name} after {done} epochs")
            for proc in running.values():
                proc.wait()
            print("run the same command again to continue")
            return
        while queue and len(running) < args.parallel:
            name = queue.pop(0)
            running[name] = launch(args, name, logs)
            print(f"{time.monotonic() - start:6.0f} s  started {name}", flush=True)
        time.sleep(2)
    if not plan(args):
        print("every run finished: writing the results")
        sys.exit(collect(args))


if __name__ == "__main__":
    main()
