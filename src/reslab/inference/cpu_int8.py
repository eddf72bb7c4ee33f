"""Which int8 arithmetic this CPU has, and the quantisation that stays exact on it.

x86 int8 kernels multiply uint8 activations by int8 weights. With VNNI (``vpdpbusd``:
AVX512-VNNI, AVX-VNNI) or AMX the products are summed in 32 bits. Without it (AVX2, AVX-512
without VNNI, SSE4.1) the kernels of onnxruntime (MLAS) and of oneDNN use ``vpmaddubsw``,
which adds each *pair* of u8×s8 products in a signed 16-bit lane and saturates:
255·127 + 255·127 = 64770 > 32767. Real activations and weights rarely reach both extremes
at once, but often enough to cost points of top-1 (the Keras ResNet-50 lost 4.75 pt on an AMD
Zen 3). Taking one bit from the weights makes every pair sum fit: with |w| <= 64,
2·255·64 = 32640 <= 32767. Both int8 rungs do that on such CPUs:

- onnxruntime: ``quantize_static(reduce_range=True)`` quantises the weights to −64..64; its
  documentation recommends it for x86 CPUs without VNNI.
- PT2E: the weights' range is −64..63 (a torchao ``QuantizationSpec``). torchao's own
  ``reduce_range`` takes the bit from the activations instead (0..127), which doubled the
  logit error of the shipped Fashion-MNIST ResNet-20 (0.53 against 0.24, largest gap), while
  7-bit weights kept it (0.19): per-channel weight scales lose less than one activation
  scale per tensor.

With VNNI or AMX the full 8 bits are kept (finer steps, nothing saturates). Other
architectures (ARM's dot-product and widening kernels) do not saturate either.

The flags come from ``torch.cpu.get_capabilities()`` (the CPUID instruction: what the
kernels of this process will see, also under an emulator), else from ``/proc/cpuinfo``.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "INT8_TARGETS",
    "CpuInt8",
    "Int8Choice",
    "cpu_int8",
    "int8_choice",
]

# The flags that decide the class, in /proc/cpuinfo's spelling.
INT8_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
# torch.cpu.get_capabilities() spells some of them differently.
_TORCH_NAMES = {"avx512_f": "avx512f", "avx512_bw": "avx512bw"}
# What a quantised file is made for: this machine's class, CPUs with VNNI/AMX (8 bits), or
# every x86 CPU (7 bits where the products would otherwise saturate).
INT8_TARGETS = ("this", "vnni", "any")
_SATURATING = ("avx512", "avx2", "sse4")


@dataclass(frozen=True)
class CpuInt8:
    """A CPU's int8 class (``cpu_class``), from the flags seen and where they were read."""

    cpu_class: str  # amx | avx512-vnni | avx-vnni | avx512 | avx2 | sse4 | x86 | <machine>
    flags: tuple[str, ...]
    source: str

    @property
    def saturates(self) -> bool:
        """u8×s8 pair sums saturate in 16 bits here (x86 without VNNI or AMX)."""
        return self.cpu_class in _SATURATING or self.cpu_class == "x86"

    def to_dict(self) -> dict:
        return {"class": self.cpu_class, "flags": list(self.flags), "flags_from": self.source}


def _x86_class(flags: set[str]) -> str:
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "sse4_1" in flags:
        return "sse4"
    return "x86"


def _seen_flags() -> tuple[set[str], str]:
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        flags = {_TORCH_NAMES.get(k, k) for k, v in caps.items() if v is True}
        return flags, "cpuid (torch.cpu.get_capabilities)"
    except (AttributeError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split()), "/proc/cpuinfo"
    except OSError:
        pass
    return set(), "nowhere (no flags found)"


def cpu_int8(flags: Iterable[str] | None = None, machine: str | None = None) -> CpuInt8:
    """This CPU's int8 class, or the class of a CPU with ``flags`` (/proc/cpuinfo names).

    Args:
        flags: the CPU's flags (default: read from this machine).
        machine: ``platform.machine()`` (default: this machine's).
    """
    source = "given"
    if flags is None:
        seen, source = _seen_flags()
    else:
        seen = {_TORCH_NAMES.get(f, f) for f in flags}
    machine = (machine or platform.machine()).lower()
    relevant = tuple(f for f in INT8_FLAGS if f in seen)
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return CpuInt8(machine or "unknown", relevant, source)
    return CpuInt8(_x86_class(seen), relevant, source)


@dataclass(frozen=True)
class Int8Choice:
    """The int8 quantisation chosen for a target CPU, and why."""

    target: str  # "this", "vnni" or "any" (see INT8_TARGETS)
    cpu: CpuInt8  # this machine's class (what "this" resolved to)
    weight_bits: int  # 8, or 7 where u8xs8 pair sums would saturate in 16 bits
    reason: str

    @property
    def weights(self) -> str:
        """The weights' int8 range, in words."""
        seven = self.weight_bits == 7
        return "int8 per channel, 7-bit (|w| <= 64)" if seven else "int8 per channel"

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "cpu": self.cpu.to_dict(),
            "weight_bits": self.weight_bits,
            "reason": self.reason,
        }


def int8_choice(target: str = "this", cpu: CpuInt8 | None = None) -> Int8Choice:
    """The int8 weights for ``target``: ``"this"`` CPU (``cpu``, default: detected), ``"vnni"``
    (CPUs with VNNI or AMX: 8 bits) or ``"any"`` x86 CPU (7 bits, exact everywhere)."""
    if target not in INT8_TARGETS:
        raise ValueError(f"unknown int8 target {target!r}; expected one of {INT8_TARGETS}")
    cpu = cpu or cpu_int8()
    if target == "any":
        return Int8Choice(target, cpu, 7, "for any x86 CPU: 7-bit weights never saturate")
    if target == "vnni":
        return Int8Choice(target, cpu, 8, "for CPUs with VNNI or AMX: 32-bit sums")
    if cpu.saturates:
        why = f"this CPU ({cpu.cpu_class}, no VNNI) sums u8xs8 pairs in 16 bits: 7 bits fit"
        return Int8Choice(target, cpu, 7, why)
    return Int8Choice(target, cpu, 8, f"this CPU ({cpu.cpu_class}) does not saturate")
