"""Peak memory of one step of a model, measured in a fresh process (Linux).

The parent runs ``python -m reslab.models.peak_memory NAME LAYERS REFERENCE MODE BATCH SIZE
THREADS``; the child builds the model, takes one step and prints the peak resident set
(``VmHWM``) minus the resident set just before the step, in MB, as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from reslab.models.profile import make_bench_model, timed_step

__all__ = ["measure_peak_memory"]


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")


def measure_peak_memory(
    name: str, layers: str, reference: str | None, mode: str, batch: int, size: int, threads: int
) -> float | None:
    """Peak extra resident memory (MB) of one step in a fresh process; None where unmeasurable."""
    args = [name, layers, reference or "-", mode, str(batch), str(size), str(threads)]
    proc = subprocess.run(
        [sys.executable, "-m", "reslab.models.peak_memory", *args], capture_output=True, text=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"])


def main(argv: list[str]) -> int:
    name, layers, reference, mode, batch, size, threads = argv
    torch.set_num_threads(int(threads))
    model = make_bench_model(name, layers, None if reference == "-" else reference)
    x = torch.rand(int(batch), 3, int(size), int(size))
    step = timed_step(model, x, mode)
    before = _status_mb("VmRSS:")
    step()
    print(json.dumps({"peak_mb": _status_mb("VmHWM:") - before}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
