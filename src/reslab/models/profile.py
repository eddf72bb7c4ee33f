"""Profile a model: parameters, FLOPs, and speed side by side with other variants.

Timings interleave the compared variants run by run, so slow drift of the machine (thermal,
other load) hits every variant alike, and report the median. Peak memory is measured in a
fresh process per variant (:mod:`reslab.models.peak_memory`).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from reslab.models.registry import build_model
from reslab.models.resnet import ResNet

__all__ = [
    "BenchResult",
    "bench_models",
    "count_flops",
    "count_params",
    "cpu_flags",
    "cpu_name",
    "make_bench_model",
    "meta_model",
    "timed_step",
]


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of one image (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    was_training = model.training
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    model.train(was_training)
    return counter.get_total_flops()


def meta_model(name: str, **kwargs) -> ResNet:
    """A registered model on the meta device: shapes and counts without allocating weights."""
    with torch.device("meta"):
        return build_model(name, **kwargs)


def _cpuinfo(key: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU model, for benchmark headers."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags(prefixes: tuple[str, ...] = ("avx", "amx", "fma", "sse4")) -> list[str]:
    """The CPU's SIMD flags (AVX, AMX, FMA, SSE4…), for benchmark headers."""
    flags = (_cpuinfo("flags") or "").split()
    return sorted(f for f in flags if f.startswith(prefixes))


@dataclass
class BenchResult:
    label: str
    mode: str
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def make_bench_model(name: str, layers: str, reference: str | None) -> nn.Module:
    """reslab's ``name`` on a layer set (no input normalisation), or torchvision's twin."""
    if reference == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)()
    return build_model(name, layers=layers, normalize=False)


def timed_step(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """One ``"forward"`` (eval, no grad) or ``"forward+backward"`` (train) step on ``x``."""
    if mode == "forward":
        model.eval()

        def run() -> None:
            with torch.no_grad():
                model(x)

        return run
    model.train()

    def run_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(1).mean().backward()

    return run_backward


def bench_models(
    name: str,
    variants: dict[str, tuple[str, str | None]],
    *,
    batch: int = 8,
    size: int = 224,
    runs: int = 5,
    warmup: int = 1,
    modes: tuple[str, ...] = ("forward", "forward+backward"),
) -> list[BenchResult]:
    """Time ``variants`` (label -> (layer set, reference library or None)) side by side.

    All variants share the same weights, so they compute the same function.
    """
    models = {label: make_bench_model(name, ls, ref) for label, (ls, ref) in variants.items()}
    first = next(iter(models.values()))
    for model in models.values():
        model.load_state_dict(first.state_dict())
    x = torch.rand(batch, 3, size, size)
    results: list[BenchResult] = []
    for mode in modes:
        steps = {label: timed_step(m, x, mode) for label, m in models.items()}
        for step in steps.values():
            for _ in range(warmup):
                step()
        rows = {label: BenchResult(label, mode) for label in steps}
        for _ in range(runs):
            for label, step in steps.items():  # interleaved: drift hits every variant alike
                start = time.perf_counter()
                step()
                rows[label].times.append(time.perf_counter() - start)
        results.extend(rows.values())
    return results
