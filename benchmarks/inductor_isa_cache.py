"""torch.compile's FX-graph cache and ATEN_CPU_CAPABILITY: a reproduction.

Three fresh processes share one inductor cache folder. The first compiles ResNet-20
(channels-last, fp32, batch 256 of 1 x 28 x 28) with the machine's own kernels and fills the
cache. The second and third set ``ATEN_CPU_CAPABILITY=avx2`` (what emulating an AVX2-only CPU
on an AVX-512 machine takes), the second with the FX-graph cache on, the third with it off,
and each prints the largest difference between the compiled model's logits and the eager
model's. On torch 2.14.1 the second gives wrong logits (BENCHMARKS.md, "An AVX2-only CPU");
reslab's ``Compile`` callback turns that cache off in such a process.

    flock /tmp/reslab-heavy.lock python3 benchmarks/inductor_isa_cache.py
"""

from __future__ import annotations

import json
import os
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
