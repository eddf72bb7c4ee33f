"""Training throughput on a CUDA GPU: fp32 vs channels-last vs bf16/fp16 autocast.

What is measured: samples/s of one full training step (forward, cross-entropy, backward,
SGD-Nesterov step) of a reslab model on random inputs already on the GPU (the loaders keep
small data sets on the device, so this is the rate the Learner can reach), for

* ``fp32``           — NCHW, fp32 (cuDNN may use TF32 for convolutions: torch's default),
* ``fp32-cl``        — channels-last, fp32,
* ``bf16-cl``        — channels-last, bf16 autocast,
* ``fp16-cl``        — channels-last, fp16 autocast + GradScaler.

Each variant is warmed up (cuDNN autotuning on), then the variants run interleaved
``--runs`` times, ``--steps`` steps per run, timed with CUDA synchronisation; the median
samples/s is reported, with the ratio to ``fp32`` from the same run.

    python3 benchmarks/gpu_throughput.py                 # resnet20 @32 px, resnet50 @224 px
    python3 benchmarks/gpu_throughput.py --runs 1 --steps 2 --models resnet20   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from reslab import create_model

VARIANTS = {
    "fp32": (torch.contiguous_format, None),
    "fp32-cl": (torch.channels_last, None),
    "bf16-cl": (torch.channels_last, torch.bfloat16),
    "fp16-cl": (torch.channels_last, torch.float16),
}
SETUPS = {  # model -> (image size, batch, num classes)
    "resnet20": (32, 512, 10),
    "resnet50": (224, 128, 1000),
}


def make_step(name: str, variant: str):
    size, bs, classes = SETUPS[name]
    fmt, dtype = VARIANTS[variant]
    model = create_model(name, num_classes=classes).cuda().to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.rand(bs, 3, size, size, device="cuda").contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (bs,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step, bs


def timed(step, steps: int) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    print(
        f"# GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}, runs {args.runs} x {args.steps} steps"
    )
    print("| model | px | batch | variant | samples/s (median) | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        steps = {v: make_step(name, v) for v in VARIANTS}
        for step, _ in steps.values():
            timed(step, 5)  # warm-up: autotuning, allocator
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.runs):
            for v, (step, bs) in steps.items():
                rates[v].append(bs * args.steps / timed(step, args.steps))
        size, bs = SETUPS[name][:2]
        base = statistics.median(rates["fp32"])
        for v, r in rates.items():
            med = statistics.median(r)
            print(f"| {name} | {size} | {bs} | {v} | {med:,.0f} | {med / base:.2f}x |")
        del steps
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
