"""The machine and software a report (or a run) was made with."""

from __future__ import annotations

import os
import platform

import torch

from reslab.models.profile import cpu_flags, cpu_name
from reslab.version import __version__, git_commit

__all__ = ["environment"]


def environment() -> dict[str, str]:
    """reslab (version, git commit), Python, torch, the OS, the CPU (model, SIMD flags,
    cores, torch threads) and the GPUs, as display strings."""
    facts = {
        "reslab": __version__,
        "git commit": git_commit() or "not a git checkout",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "CPU": cpu_name(),
        "CPU flags": " ".join(cpu_flags()) or "—",
        "CPU cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "GPU": _gpus(),
    }
    return facts


def _gpus() -> str:
    if not torch.cuda.is_available():
        return "none"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{', '.join(names)} (CUDA {torch.version.cuda})"
