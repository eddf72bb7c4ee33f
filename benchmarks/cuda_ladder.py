"""The inference ladder on a CUDA GPU (BENCHMARKS.md, "Inference ladder (GPU)").

    python benchmarks/cuda_ladder.py --json OUT.json [--batch 256] [--runs 7]

Two parts, one process:

* **speed**: ResNet-50 (random weights: speed does not depend on them) at 224 px, batch 256.
  Every rung runs the same batch; the rungs are timed round-robin (``--runs`` rounds of
  ``--iters`` steps each, CUDA events), so clock drift hits them alike; the median round gives
  img/s, and the ratio is against eager fp32 in the same process.
* **accuracy**: the same rungs built from ``resnet20@reslab-cifar10`` (the shipped weights),
  top-1 on the 10,000 CIFAR-10 test images (the JPEG copy; ``$RESLAB_DATA`` must hold
  ``cifar10-jpg.tar.gz``), batch 256.

Rungs: ``eager`` (fp32 as PyTorch runs it: cuDNN may use TF32 for convolutions, its default),
``eager-strict`` (TF32 off), ``fast`` (BN folded, channels-last), ``bf16``, ``fp16`` (the
fast model cast), ``compile`` and ``compile-bf16`` (reslab's engines), ``graph-fp32`` and
``graph-bf16`` (the fast model captured once in a CUDA graph and replayed) and
``compile-bf16-graphs`` (inductor's ``reduce-overhead`` mode, which uses CUDA graphs itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from reslab.data import load_dataset
from reslab.inference import get_engine, ladder_eval_data
from reslab.inference.engines import fast_model
from reslab.weights import resolve_model

Runner = Callable[[Tensor], Tensor]


def _cast(model: nn.Module, dtype: torch.dtype) -> Runner:
    net = fast_model(model).cuda().to(dtype)

    def run(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net(x.to(dtype).contiguous(memory_format=torch.channels_last)).float()

    return run


def _strict_eager(model: nn.Module) -> Runner:
    net = model.eval().cuda()

    def run(x: Tensor) -> Tensor:
        conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.inference_mode():
                return net(x)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm

    return run


class GraphedRunner:
    """``net`` captured in one CUDA graph for ``example``'s shape and replayed.

    A graph records raw device addresses: of its input and output buffers and of ``net``'s
    weights. It keeps none of them alive, so this object holds all three; a graph whose module
    was freed replays on reused memory: wrong logits or NaN, or "an illegal memory access" once
    the caching allocator hands the block back to the driver. Both were seen on the H200 with
    an earlier version that let the module go (the likely cause; not yet rerun on a GPU).
    Warm-up runs on a side stream, as capture requires.
    """

    def __init__(self, net: nn.Module, example: Tensor, dtype: torch.dtype) -> None:
        self.net = net  # the graph reads these weights' addresses
        self.static_in = example.cuda().to(dtype).contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):
                net(self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.static_out = net(self.static_in)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape != self.static_in.shape:
            raise ValueError(
                f"graph captured for {tuple(self.static_in.shape)}, got {tuple(x.shape)}"
            )
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.float().clone()  # the next replay overwrites static_out


def _compiled_graphs(model: nn.Module) -> Runner:
    net = torch.compile(fast_model(model).cuda().to(torch.bfloat16), mode="reduce-overhead")

    def run(x: Tensor) -> Tensor:
        # no_grad, not inference_mode: CUDA-graph trees entered from inference mode are a known
        # failure (pytorch/pytorch#135892).
        torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            out = net(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
            return out.float().clone()  # the graph's output buffer is reused by the next replay

    return run


RUNGS: dict[str, Callable[[nn.Module, Tensor], Runner]] = {
    "eager": lambda m, x: get_engine("eager").prepare(m, example=x, device="cuda"),
    "eager-strict": lambda m, x: _strict_eager(m),
    "fast": lambda m, x: get_engine("fast").prepare(m, example=x, device="cuda"),
    "bf16": lambda m, x: get_engine("bf16").prepare(m, example=x, device="cuda"),
    "fp16": lambda m, x: _cast(m, torch.float16),
    "graph-fp32": lambda m, x: GraphedRunner(fast_model(m).cuda(), x, torch.float32),
    "graph-bf16": lambda m, x: GraphedRunner(
        fast_model(m).cuda().to(torch.bfloat16), x, torch.bfloat16
    ),
    "compile": lambda m, x: get_engine("compile").prepare(m, example=x, device="cuda"),
    "compile-bf16": lambda m, x: get_engine("compile-bf16").prepare(m, example=x, device="cuda"),
    "compile-bf16-graphs": lambda m, x: _compiled_graphs(m),
}


def build_rungs(model: nn.Module, example: Tensor, names: list[str]) -> dict[str, Runner]:
    """The named rungs for ``model`` on the GPU, each warmed up on ``example``."""
    rungs: dict[str, Runner] = {}
    x = example.cuda()
    reference = get_engine("eager").prepare(model, example=x, device="cuda")(x)
    for name in names:
        print(f"building {name}", flush=True)  # the last such line names a rung that crashed
        try:
            run = RUNGS[name](model, example)
            for _ in range(3):
                out = run(x)
            torch.cuda.synchronize()
        except Exception as error:  # noqa: BLE001 - a broken rung is reported, not fatal
            print(f"rung {name} failed: {type(error).__name__}: {error}", flush=True)
            continue
        agree = (out.argmax(1) == reference.argmax(1)).float().mean().item()
        if not torch.isfinite(out).all() or agree < 0.9:
            print(f"rung {name} dropped: wrong output (top-1 agreement {agree:.3f})", flush=True)
            continue
        rungs[name] = run
    return rungs


def time_rungs(rungs: dict[str, Runner], x: Tensor, runs: int, iters: int) -> dict[str, float]:
    """Median seconds per batch of each rung, rounds interleaved across rungs."""
    seconds: dict[str, list[float]] = {name: [] for name in rungs}
    for _ in range(runs):
        for name, run in rungs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                run(x)
            end.record()
            end.synchronize()
            seconds[name].append(start.elapsed_time(end) / 1000 / iters)
    return {name: statistics.median(values) for name, values in seconds.items()}


def speed(batch: int, runs: int, iters: int, names: list[str]) -> dict:
    model = resolve_model("resnet50")
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).cuda()
    rungs = build_rungs(model, x, names)
    reference = RUNGS["eager-strict"](model, x)(x)
    per_batch = time_rungs(rungs, x, runs, iters)
    table = {}
    for name, run in rungs.items():
        out = run(x)
        table[name] = {
            "img_per_s": batch / per_batch[name],
            "ms_per_batch": per_batch[name] * 1000,
            "speedup_vs_eager": per_batch["eager"] / per_batch[name],
            "max_logit_gap_vs_strict_fp32": (out - reference).abs().max().item(),
            "top1_agreement_vs_strict_fp32": (out.argmax(1) == reference.argmax(1))
            .float()
            .mean()
            .item(),
        }
    return table


def accuracy(batch: int, names: list[str]) -> dict:
    model = resolve_model("resnet20@reslab-cifar10")
    data = ladder_eval_data(load_dataset("cifar10", "test"), model, batch)
    example = next(iter(data()))[0]
    rungs = build_rungs(model, example, names)
    result = {}
    for name, run in rungs.items():
        right = total = 0
        for x, y in data():
            keep = y >= 0
            pred = run(x.cuda()).argmax(1).cpu()
            right += int((pred[keep] == y[keep]).sum())
            total += int(keep.sum())
        result[name] = {"top1": right / total, "images": total}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--iters", type=int, default=20, help="batches per timed round")
    parser.add_argument("--skip", default="", help="rungs to leave out, comma-separated")
    args = parser.parse_args()
    names = [name for name in RUNGS if name not in args.skip.split(",")]
    started = time.time()
    props = torch.cuda.get_device_properties(0)
    result = {
        "command": "python benchmarks/cuda_ladder.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "gpu": props.name,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    for key, part in (
        ("speed_resnet50_224", lambda: speed(args.batch, args.runs, args.iters, names)),
        ("accuracy_resnet20_cifar10", lambda: accuracy(args.batch, names)),
    ):
        result[key] = part()
        result["seconds"] = round(time.time() - started, 1)
        with open(args.json, "w") as f:  # after each part: a timeout keeps what finished
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
