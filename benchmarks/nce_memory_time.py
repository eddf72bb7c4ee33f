"""Softmax cross-entropy vs negative sampling (NCE) for a classifier head with many classes.

What is measured: one training step of the head alone — ``loss(v, y, W, b)`` forward and
backward, gradients included — for a batch of 256 embeddings of dimension 512 and 10^4, 10^5
and 10^6 classes (the class table ``W`` is ``classes x 512`` float32: 20 MB, 205 MB, 2 GB).

* ``softmax``: ``F.cross_entropy(F.linear(v, W, b), y)`` — builds the 256 x classes logits.
* ``nce``: :class:`reslab.training.losses.NegativeSamplingLoss` with k negatives (uniform,
  sampled without replacement, sampling included in the time); ``W.grad`` is a dense
  ``classes x 512`` tensor with non-zero rows only where gathered.
* ``nce-sparse``: the same with ``sparse_grad=True``: ``W.grad`` holds the gathered rows only.

Peak memory: each (variant, classes) pair runs one step in a fresh process; the number is the
peak resident set (``VmHWM``, reset just before the step through ``/proc/self/clear_refs``)
minus the resident set just before the step (the table, the inputs and the interpreter are
already there), i.e. what the step itself needs on top of the model.

Time: the variants run interleaved in one process (run 1 of every variant, then run 2, …)
after one warm-up step each; the median of ``--runs`` steps is reported.

Hardware and versions are printed with the results (CPU model, torch threads, torch version).
Run (CPU-heavy, several minutes at 10^6 classes)::

    flock /tmp/reslab-heavy.lock python benchmarks/nce_memory_time.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from reslab.models.profile import cpu_name
from reslab.training.losses import NegativeSamplingLoss

VARIANTS = ("softmax", "nce", "nce-sparse")


def make_inputs(num_classes: int, dim: int, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_classes, dim, generator=g).mul_(dim**-0.5).requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    v = torch.randn(batch, dim, generator=g).requires_grad_()
    y = torch.randint(0, num_classes, (batch,), generator=g)
    return weight, bias, v, y


def make_step(variant: str, weight, bias, v, y, k: int):
    losses = {
        "nce": NegativeSamplingLoss(k),
        "nce-sparse": NegativeSamplingLoss(k, sparse_grad=True),
    }

    def step() -> None:
        for t in (weight, bias, v):
            t.grad = None
        if variant == "softmax":
            loss = F.cross_entropy(F.linear(v, weight, bias), y)
        else:
            loss = losses[variant](v, y, weight, bias)
        loss.backward()

    return step


def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_child(variant: str, num_classes: int, dim: int, batch: int, k: int) -> None:
    """Run in a fresh process: print the step's peak extra memory as JSON."""
    weight, bias, v, y = make_inputs(num_classes, dim, batch)
    step = make_step(variant, weight, bias, v, y, k)
    # VmHWM is the peak since the process started, which may lie in the set-up; writing 5 to
    # clear_refs resets it to the current resident set (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _rss_mb("VmRSS:")
    if _rss_mb("VmHWM:") > before + 1:
        raise RuntimeError("could not reset the peak resident set (VmHWM)")
    step()
    print(json.dumps({"peak_mb": _rss_mb("VmHWM:") - before}))


def measure_peak(variant: str, num_classes: int, dim: int, batch: int, k: int) -> float | None:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        str(num_classes),
        str(dim),
        str(batch),
        str(k),
        "--threads",
        str(torch.get_num_threads()),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {variant} {num_classes}: child failed: {proc.stderr.strip()[-300:]}")
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


def measure_times(num_classes: int, dim: int, batch: int, k: int, runs: int) -> dict:
    weight, bias, v, y = make_inputs(num_classes, dim, batch)
    steps = {name: make_step(name, weight, bias, v, y, k) for name in VARIANTS}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(runs):
        for name, step in steps.items():  # interleaved: drift hits every variant alike
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--negatives", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", nargs=5, metavar=("VARIANT", "C", "D", "B", "K"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        variant, *nums = args.child
        peak_child(variant, *map(int, nums))
        return

    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"batch {args.batch}, dim {args.dim}, k = {args.negatives} negatives, "
        f"median of {args.runs} interleaved runs; peak = extra RSS of one step, fresh process"
    )
    header = (
        "| classes | table MB | variant | step ms | peak MB | time vs softmax | peak vs softmax |"
    )
    print(header + "\n|---|---|---|---|---|---|---|")
    for c in args.classes:
        table_mb = c * args.dim * 4 / 2**20
        peaks = {
            name: measure_peak(name, c, args.dim, args.batch, args.negatives) for name in VARIANTS
        }
        times = measure_times(c, args.dim, args.batch, args.negatives, args.runs)
        for name in VARIANTS:
            t_ratio = times[name] / times["softmax"]
            p, p0 = peaks[name], peaks["softmax"]
            p_ratio = f"{p / p0:.3f}" if p is not None and p0 else "n/a"
            p_text = f"{p:.0f}" if p is not None else "failed"
            print(
                f"| {c:,} | {table_mb:.0f} | {name} | {1000 * times[name]:.1f} | {p_text} "
                f"| {t_ratio:.3f} | {p_ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
