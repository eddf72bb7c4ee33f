"""The from-scratch layer set (reslab.ops) against torch.nn: time and peak memory on the CPU.

What is measured: ResNet-50 (``reslab.create_model("resnet50", layers=..., normalize=False)``)
built twice, from the ``torch`` layer set (torch.nn: oneDNN/MKL kernels) and from the
``scratch`` layer set (convolution and pooling as ``as_strided`` views + matmul/reductions,
batch norm from means), with the same weights, on a batch of 8 random 224 px images:

* ``forward``: eval mode under ``torch.no_grad()``.
* ``forward+backward``: train mode (batch statistics, running-stat updates), gradients set to
  None, forward, ``logits.logsumexp(1).mean().backward()`` (no optimiser step).

Time: both models run interleaved in one process (torch run 1, scratch run 1, torch run 2, …)
after ``--warmup`` steps each, so drift of the machine hits both alike; the median of
``--runs`` steps is reported (``reslab.models.profile.bench_models``).

Peak memory: each (layer set, mode) runs in a fresh process. After building the model and the
input, and one small warm-up step (2 images of 64 px, so lazily initialised libraries are
loaded), the peak resident set ``VmHWM`` is reset to the current resident set through
``/proc/self/clear_refs``; one full step runs; the number is ``VmHWM`` minus the resident set
before the step: what the step itself needed on top of the weights, the input and the
interpreter. (tracemalloc cannot see torch's allocations; RSS sees all of them. Linux only.)

A sanity line reports the largest difference between the two models' eval logits.

Run (CPU-heavy: about a minute per run on 2 cores; the lock keeps heavy jobs apart)::

    flock /tmp/reslab-heavy.lock python benchmarks/scratch_vs_torch.py

Smoke test: ``python benchmarks/scratch_vs_torch.py --batch 1 --size 64 --runs 1 --warmup 0``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys

import torch

from reslab import create_model
from reslab.models.profile import bench_models, cpu_name

LAYER_SETS = ("torch", "scratch")
MODES = ("forward", "forward+backward")


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> None:
    if mode == "forward":
        model.eval()
        with torch.no_grad():
            model(x)
        return
    model.train()
    model.zero_grad(set_to_none=True)
    model(x).logsumexp(1).mean().backward()


def peak_child(model_name: str, layers: str, mode: str, batch: int, size: int) -> None:
    """In a fresh process: print the peak extra resident memory of one step as JSON."""
    torch.manual_seed(0)
    model = create_model(model_name, layers=layers, normalize=False)
    x = torch.rand(batch, 3, size, size)
    _step(model, torch.rand(2, 3, 64, 64), mode)  # load lazily initialised kernels
    model.zero_grad(set_to_none=True)
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to VmRSS (Linux >= 4.0)
        fh.write("5")
    before = _status_mb("VmRSS:")
    if _status_mb("VmHWM:") > before + 1:
        raise RuntimeError("could not reset the peak resident set (VmHWM)")
    _step(model, x, mode)
    print(json.dumps({"peak_mb": _status_mb("VmHWM:") - before, "base_mb": before}))


def measure_peak(args: argparse.Namespace, layers: str, mode: str) -> dict | None:
    cmd = [sys.executable, __file__, "--model", args.model, "--batch", str(args.batch)]
    cmd += ["--size", str(args.size), "--threads", str(args.threads), "--child", layers, mode]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  peak {layers} {mode}: child failed: {proc.stderr.strip()[-300:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_logit_difference(model_name: str, size: int) -> float:
    torch.manual_seed(0)
    ref = create_model(model_name, layers="torch", normalize=False).eval()
    ours = create_model(model_name, layers="scratch", normalize=False).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        return (ours(x) - ref(x)).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--child", nargs=2, metavar=("LAYERS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        peak_child(args.model, args.child[0], args.child[1], args.batch, args.size)
        return

    print("## Scratch layers (reslab.ops) vs torch.nn\n")
    print(f"- command: `{' '.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- CPU: {cpu_name()}; torch threads: {torch.get_num_threads()}")
    print(f"- torch {torch.__version__}, Python {platform.python_version()}")
    print(f"- model: {args.model}, batch {args.batch}, {args.size} px, float32")
    print(f"- time: median of {args.runs} interleaved runs after {args.warmup} warm-up runs each")
    print("- peak: extra resident memory (VmHWM - VmRSS before) of one step, fresh process\n")
    sys.stdout.flush()

    peaks = {}
    if not args.no_memory:
        for mode in MODES:
            for layers in LAYER_SETS:
                peaks[layers, mode] = measure_peak(args, layers, mode)
    results = bench_models(
        args.model,
        {layers: (layers, None) for layers in LAYER_SETS},
        batch=args.batch,
        size=args.size,
        runs=args.runs,
        warmup=args.warmup,
        modes=MODES,
    )
    times = {(r.label, r.mode): r for r in results}

    print("| mode | measure | torch | scratch | scratch / torch |")
    print("|---|---|---|---|---|")
    for mode in MODES:
        t, s = times["torch", mode].median, times["scratch", mode].median
        print(f"| {mode} | time (s, median) | {t:.3f} | {s:.3f} | {s / t:.2f} |")
        pt, ps = peaks.get(("torch", mode)), peaks.get(("scratch", mode))
        if pt and ps:
            ratio = ps["peak_mb"] / pt["peak_mb"]
            print(f"| {mode} | peak extra memory (MiB) | {pt['peak_mb']:.0f} "
                  f"| {ps['peak_mb']:.0f} | {ratio:.2f} |")  # fmt: skip
    for mode in MODES:
        for layers in LAYER_SETS:
            runs = ", ".join(f"{t:.3f}" for t in times[layers, mode].times)
            print(f"\n- {layers} {mode} runs (s): {runs}", end="")
    diff = max_logit_difference(args.model, args.size)
    print(f"\n- max |logit difference| (eval, same weights, 1 image): {diff:.2e}")


if __name__ == "__main__":
    main()
