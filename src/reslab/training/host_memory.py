"""Keep freed host memory in the process while training on the CPU.

A training step frees its activations and allocates them again at the next step. glibc's
``malloc`` serves large blocks with ``mmap`` and gives them back with ``munmap``, and it trims
the top of its heap back to the system, so the next step touches fresh pages: each 4 KiB page
is a page fault and is zeroed by the kernel. ResNet-20 on Fashion-MNIST (batch 256, bf16) takes
5,000 to 12,500 page faults per step that way (20 to 50 MB of fresh pages). With
:func:`keep_freed_host_memory` glibc serves blocks up to 32 MiB (the most it allows) from its
heap and never trims the heap: what a step frees is there for the next one, and after the
first steps no page faults are left; `reslab train` runs 7 % faster (BENCHMARKS.md, "Host
memory kept between steps"). The heap keeps its peak size until the process exits, as
PyTorch's CUDA allocator does on the GPU (for ResNet-20 on Fashion-MNIST the peak is the same:
1.08 GB either way). Larger blocks are still mapped and unmapped each time.

``RESLAB_HOST_MEMORY=system`` leaves the C library's policy alone; ``keep`` (the default) asks
for this one. Only glibc is changed (Linux); elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["HOST_MEMORY_ENV", "host_memory_policy", "keep_freed_host_memory"]

HOST_MEMORY_ENV = "RESLAB_HOST_MEMORY"
POLICIES = ("keep", "system")
# mallopt(3) parameters (glibc's malloc.h) and the values set.
M_TRIM_THRESHOLD, NEVER = -1, -1  # never give the heap's top back to the system
M_MMAP_THRESHOLD, MMAP_ABOVE = -3, 32 * 2**20  # bytes: blocks up to this come from the heap

_kept = False


def host_memory_policy() -> str:
    """``keep`` or ``system``, from ``$RESLAB_HOST_MEMORY`` (default ``keep``)."""
    given = os.environ.get(HOST_MEMORY_ENV, "")
    policy = given.strip().lower() or "keep"
    if policy not in POLICIES:
        raise ValueError(f"{HOST_MEMORY_ENV}={given!r}: expected one of {', '.join(POLICIES)}")
    return policy


def keep_freed_host_memory() -> bool:
    """Ask glibc to serve blocks up to 32 MiB from its heap and keep freed memory there (see
    the module's text).

    Returns True when the process keeps freed memory now (set here or by an earlier call),
    False when the policy is ``system`` or the C library is not glibc. Idempotent.
    """
    global _kept
    if _kept:
        return True
    if host_memory_policy() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER))
    return _kept
