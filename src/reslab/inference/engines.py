"""Inference engines: one model, several ways to run it, each a rung of speed against accuracy.

An :class:`Engine` turns an eval-mode classifier into a *runner*: a function from a batch of
0–1 images ``(N, C, H, W)`` to float32 logits ``(N, classes)``. The rungs:

============== ===== ==========================================================================
name           prec  what it does
========== ========= ==========================================================================
eager          fp32  the model as it is
fast           fp32  BatchNorm folded into the convolutions, channels-last memory layout
compile        fp32  ``fast`` compiled by torch.compile (inductor, frozen weights)
bf16           bf16  ``fast`` with bfloat16 weights and activations (native bf16 hardware only)
compile-bf16   bf16  ``bf16`` compiled by torch.compile (inductor, frozen weights)
int8           int8  PT2E static quantisation (torchao's x86 inductor quantizer), compiled
onnx           fp32  the exported ONNX graph on onnxruntime
onnx-int8      int8  the ONNX graph statically quantised by onnxruntime (QDQ, per-channel)
============== ===== ==========================================================================

The int8 rungs need calibration images of the data the model is for, given explicitly, and
keep one bit less on x86 CPUs without VNNI (:mod:`reslab.inference.cpu_int8`); an
engine that this machine cannot run raises :class:`EngineUnavailable` (one line, saying why).
The compiled rungs (``Engine.compiles``) compile once per batch size; :func:`fixed_batch`
pads odd batches to one size so that a data set's last batch costs no second compilation.
"""

from __future__ import annotations

import copy
import platform
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reslab.inference import onnx_engines, pt2e_int8
from reslab.inference.calibration import CalibrationError, calibration_batches
from reslab.inference.cpu_int8 import int8_choice
from reslab.inference.export import fold_batchnorm, to_torch_layers

__all__ = [
    "ENGINE_NAMES",
    "CalibrationError",
    "Engine",
    "EngineUnavailable",
    "Runner",
    "fast_model",
    "fixed_batch",
    "get_engine",
]

Runner = Callable[[Tensor], Tensor]


class EngineUnavailable(RuntimeError):
    """This machine (or its installed packages) cannot run the engine; the message says why."""


def fast_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded and channels-last weights."""
    folded = fold_batchnorm(to_torch_layers(model).eval())
    return folded.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------- availability
def _cpu_or_cuda(device: torch.device) -> str | None:
    if device.type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible"
    if device.type not in ("cpu", "cuda"):
        return f"runs on the CPU or a CUDA GPU, not on {device.type}"
    return None


def _cpu_only(device: torch.device) -> str | None:
    return None if device.type == "cpu" else "runs on the CPU only"


def _has_compiler() -> str | None:
    if any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        return None
    return "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on PATH"


def _check_compile(device: torch.device) -> str | None:
    return _cpu_or_cuda(device) or (_has_compiler() if device.type == "cpu" else None)


def _check_bf16(device: torch.device) -> str | None:
    if reason := _cpu_or_cuda(device):
        return reason
    if device.type == "cuda":
        return None if torch.cuda.is_bf16_supported() else "this GPU has no native bfloat16"
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    return (
        "this CPU has no native bfloat16 (AVX512-BF16 or AMX); emulated bf16 is slower than "
        "fp32, use 'fast' or 'compile'"
    )


def _check_compile_bf16(device: torch.device) -> str | None:
    return _check_bf16(device) or _check_compile(device)


def _check_int8(device: torch.device) -> str | None:
    if device.type != "cpu":
        return "runs on the CPU only"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the x86 int8 quantizer needs an x86-64 CPU, not {platform.machine()}"
    return pt2e_int8.missing_packages() or _has_compiler()


def _check_onnx(device: torch.device) -> str | None:
    return _cpu_only(device) or onnx_engines.missing_packages()


# ---------------------------------------------------------------------------- runners
def _inference(fn: Callable[[Tensor], Tensor], device: torch.device, channels_last: bool):
    def run(images: Tensor) -> Tensor:
        images = images.to(device)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return fn(images).float()

    return run


def _eager(model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device) -> Runner:
    model = model.eval().to(device)
    return _inference(model, device, channels_last=False)


def _fast(model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device) -> Runner:
    return _inference(fast_model(model).to(device), device, channels_last=True)


def _frozen_compile(module: nn.Module) -> Callable[[Tensor], Tensor]:
    # Freezing turns the weights into constants (oneDNN pre-packs them; the int8 patterns
    # need it). Compilation happens at each new input shape, so every call runs under the
    # setting: passed as torch.compile(options=...) instead, the int8 graph fails to lower.
    # One graph per batch size (dynamic=False): specialised shapes give the fastest kernels.
    from torch._inductor import config

    compiled = torch.compile(module, dynamic=False)

    def forward(images: Tensor) -> Tensor:
        with config.patch(freezing=True):
            return compiled(images)

    return forward


def _compile(
    model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device
) -> Runner:
    return _inference(_frozen_compile(fast_model(model).to(device)), device, channels_last=True)


def _bf16_model(model: nn.Module, device: torch.device) -> nn.Module:
    return fast_model(model).to(device=device, dtype=torch.bfloat16)


def _bf16(model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device) -> Runner:
    bf16 = _bf16_model(model, device)
    return _inference(lambda x: bf16(x.to(torch.bfloat16)), device, channels_last=True)


def _compile_bf16(
    model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device
) -> Runner:
    compiled = _frozen_compile(_bf16_model(model, device))
    return _inference(lambda x: compiled(x.to(torch.bfloat16)), device, channels_last=True)


def _int8(model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device) -> Runner:
    bits = int8_choice().weight_bits  # 7 on x86 CPUs without VNNI
    quantized = pt2e_int8.quantize(to_torch_layers(model).eval(), example, calib, weight_bits=bits)
    return _inference(_frozen_compile(quantized), device, channels_last=True)


def _onnx(model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device) -> Runner:
    return onnx_engines.onnx_runner(model, example)


def _onnx_int8(
    model: nn.Module, example: Tensor, calib: list[Tensor], device: torch.device
) -> Runner:
    return onnx_engines.onnx_int8_runner(model, example, calib)


# ---------------------------------------------------------------------------- engines
@dataclass(frozen=True)
class Engine:
    """One way to run a model for inference (see the module docstring for the rungs)."""

    name: str
    precision: str
    summary: str
    needs_calibration: bool
    compiles: bool
    check: Callable[[torch.device], str | None]
    build: Callable[[nn.Module, Tensor, list[Tensor], torch.device], Runner]

    def available(self, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """``(True, "")`` when this machine can run the engine, else ``(False, why not)``."""
        reason = self.check(torch.device(device))
        return (reason is None, reason or "")

    def prepare(
        self,
        model: nn.Module,
        *,
        example: Tensor | None = None,
        calib: Tensor | Iterable[Tensor] | None = None,
        device: str | torch.device = "cpu",
    ) -> Runner:
        """A runner: 0–1 images ``(N, C, H, W)`` → float32 logits, computed by this engine.

        Args:
            model: a classifier (a reslab model, or any module for the fp32 torch engines);
                it is not modified.
            example: an input batch giving C, H, W (default: from ``model.default_cfg``).
            calib: calibration images for the int8 engines, a tensor ``(N, C, H, W)`` in
                0–1 or an iterable of such batches (e.g. a DataLoader's images); required
                and non-empty there, ignored elsewhere.
            device: where the engine runs.

        Raises:
            EngineUnavailable: this machine cannot run the engine.
            CalibrationError: an int8 engine got no calibration images.
        """
        device = torch.device(device)
        ok, reason = self.available(device)
        if not ok:
            raise EngineUnavailable(f"engine {self.name!r} is not available here: {reason}")
        batches = calibration_batches(calib, self.name) if self.needs_calibration else []
        if example is None:
            size = (getattr(model, "default_cfg", {}) or {}).get("input_size", (3, 224, 224))
            example = torch.rand(2, *size, generator=torch.Generator().manual_seed(0))
        return self.build(copy.deepcopy(model).eval(), example, batches, device)


_ENGINES = (
    Engine("eager", "fp32", "the model as it is", False, False, _cpu_or_cuda, _eager),
    Engine("fast", "fp32", "BatchNorm folded, channels-last", False, False, _cpu_or_cuda, _fast),
    Engine("compile", "fp32", "fast + torch.compile", False, True, _check_compile, _compile),
    Engine("bf16", "bf16", "fast in bfloat16 (native only)", False, False, _check_bf16, _bf16),
    Engine(
        "compile-bf16",
        "bf16",
        "bf16 + torch.compile",
        False,
        True,
        _check_compile_bf16,
        _compile_bf16,
    ),
    Engine("int8", "int8", "PT2E static int8, compiled", True, True, _check_int8, _int8),
    Engine("onnx", "fp32", "ONNX graph on onnxruntime", False, False, _check_onnx, _onnx),
    Engine("onnx-int8", "int8", "onnxruntime static int8", True, False, _check_onnx, _onnx_int8),
)
ENGINE_NAMES = tuple(e.name for e in _ENGINES)


def get_engine(name: str) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINE_NAMES`)."""
    for engine in _ENGINES:
        if engine.name == name:
            return engine
    raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(ENGINE_NAMES)}")


def fixed_batch(run: Runner, batch: int) -> Runner:
    """``run`` that always sees ``batch`` images: a smaller batch is padded with copies of
    its first image (their logits are dropped), a larger one is run in chunks.

    For the compiled engines, which compile once per batch size: a data set's last, short
    batch then reuses the first compilation.
    """
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")

    def padded(images: Tensor) -> Tensor:
        outputs = []
        for chunk in images.split(batch):
            n = len(chunk)
            if n < batch:
                chunk = torch.cat([chunk, chunk[:1].expand(batch - n, *chunk.shape[1:])])
            outputs.append(run(chunk)[:n])
        return torch.cat(outputs)

    return padded
