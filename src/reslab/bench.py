"""Measure a model's speed and peak memory on the CPU (or a GPU when one is there).

Timings interleave the compared variants run by run, so slow drift of the machine (thermal,
other load) hits every variant alike, and report the median. Peak memory on the CPU is read
from the kernel: each variant runs once in a fresh process, and the peak resident set
(``VmHWM``) minus the resident set just before the step is what the step itself needed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["BenchResult", "bench_models", "cpu_name", "measure_peak_memory"]


def cpu_name() -> str:
    """The CPU model, for benchmark headers."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class BenchResult:
    label: str
    mode: str
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def _make_model(name: str, layers: str, reference: str | None):
    if reference == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)()
    from reslab import create_model

    return create_model(name, layers=layers, normalize=False)


def _step(model, x: torch.Tensor, mode: str) -> Callable[[], None]:
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
    models = {label: _make_model(name, ls, ref) for label, (ls, ref) in variants.items()}
    first = next(iter(models.values()))
    for model in models.values():
        model.load_state_dict(first.state_dict())
    x = torch.rand(batch, 3, size, size)
    results = []
    for mode in modes:
        steps = {label: _step(m, x, mode) for label, m in models.items()}
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


_PEAK_SCRIPT = """
import json, sys, torch
sys.argv = sys.argv[:1]
from reslab.bench import _make_model, _step
name, ls, ref, mode, batch, size, threads = {args!r}
torch.set_num_threads(threads)
model = _make_model(name, ls, ref)
x = torch.rand(batch, 3, size, size)
step = _step(model, x, mode)
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
before = status('VmRSS:')
step()
print(json.dumps({{'peak_mb': status('VmHWM:') - before}}))
"""


def measure_peak_memory(
    name: str, layers: str, reference: str | None, mode: str, batch: int, size: int, threads: int
) -> float | None:
    """Peak extra resident memory (MB) of one step, measured in a fresh process (Linux only)."""
    args = (name, layers, reference, mode, batch, size, threads)
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT.format(args=args)], capture_output=True, text=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])
