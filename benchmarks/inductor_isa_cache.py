"""torch.compile's FX-graph cache and ATEN_CPU_CAPABILITY: a reproduction.

Three fresh processes share one inductor cache folder. The first compiles ResNet-20
(channels-last, fp32, batch 256 of 1 x 28 x 28) with the machine's own kernels and fills the
cache. The second and third set ``ATEN_CPU_CAPABILITY=avx2`` (what emulating an AVX2-only CPU
on an AVX-512 machine takes), the second with the FX-graph cache on, the third with it off,
and each prints the largest difference between the compiled model's logits and the eager
model's. On torch 2.14.1 the second gives wrong logits (BENCHMARKS.md, "An AVX2-only CPU");
reslab's ``Compile`` callback turns that cache off in such a process.

``--reverse``: the other direction. An AVX2 process fills a fresh cache with a training-mode
BatchNorm2d graph (float32, channels-last, 256 x 16 x 28 x 28, input requiring grad); then a
process with the machine's own kernels compiles the same graph from that cache, and another
from a cache of its own. On torch 2.14.1 the one served the AVX2 entries dies (a segfault or
glibc's heap-corruption abort). The ``Compile`` callback's guard keeps a reslab process with
``ATEN_CPU_CAPABILITY`` set from writing such entries.

    flock /tmp/reslab-heavy.lock python3 benchmarks/inductor_isa_cache.py [--reverse]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
import torch
import torch._inductor.config as inductor_config
from reslab.models import build_model
inductor_config.fx_graph_cache = sys.argv[1] == "on"
torch.manual_seed(0)
model = build_model("resnet20", num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
x = torch.rand(256, 1, 28, 28).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    eager = model(x)
    compiled = torch.compile(model)(x)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "max_abs_diff": (compiled - eager).abs().max().item(),
                  "nan": bool(compiled.isnan().any())}))
"""

CHILD_REVERSE = """
import json
import torch
from torch import nn
torch.manual_seed(0)
bn = nn.BatchNorm2d(16)
x = torch.randn(256, 16, 28, 28).contiguous(memory_format=torch.channels_last).requires_grad_()
eager = nn.BatchNorm2d(16)(x)
compiled = torch.compile(bn)
for _ in range(5):
    out = compiled(x)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "max_abs_diff": (out - eager).abs().max().item(), "nan": False}))
"""


def child_status(cache: str, capability: str | None) -> str:
    """Run the training-mode BatchNorm2d graph in a fresh process: its result or how it died."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(REPO / "src")}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run([sys.executable, "-c", CHILD_REVERSE], env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode < 0:
        return f"died on signal {-proc.returncode} ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        glibc = [line for line in proc.stderr.splitlines() if "corrupt" in line or "free()" in line]
        return f"died, exit status {proc.returncode} ({(glibc or ['?'])[-1]})"
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return f"{res['capability']}, max |compiled - eager| = {res['max_abs_diff']:.3g}"


def reverse() -> None:
    shared, own = (tempfile.mkdtemp(prefix="reslab-inductor-cache-") for _ in range(2))
    print("ATEN_CPU_CAPABILITY=avx2, fills a fresh cache:", child_status(shared, "avx2"))
    print("machine's own kernels, from that cache:", child_status(shared, None))
    print("machine's own kernels, a cache of its own:", child_status(own, None))


def child(cache: str, capability: str | None, graph_cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(REPO / "src")}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run([sys.executable, "-c", CHILD, graph_cache], env=env,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if "--reverse" in sys.argv[1:]:
        reverse()
        return
    cache = tempfile.mkdtemp(prefix="reslab-inductor-cache-")
    steps = [("machine's own kernels, fills the cache", None, "on"),
             ("ATEN_CPU_CAPABILITY=avx2, FX-graph cache on", "avx2", "on"),
             ("ATEN_CPU_CAPABILITY=avx2, FX-graph cache off", "avx2", "off")]  # fmt: skip
    import torch

    print(f"torch {torch.__version__}, cache {cache}")
    for what, capability, graph_cache in steps:
        res = child(cache, capability, graph_cache)
        print(f"{what}: {res['capability']}, max |compiled - eager| = "
              f"{res['max_abs_diff']:.3g}{', NaN' if res['nan'] else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
