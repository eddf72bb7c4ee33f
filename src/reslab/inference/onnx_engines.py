"""onnxruntime engines: the exported fp32 graph, and its static int8 quantisation.

The int8 graph is written in QDQ form (QuantizeLinear/DequantizeLinear pairs around each
quantised op, which onnxruntime fuses into int8 kernels): weights per output channel,
symmetric int8; activations per tensor, uint8 with a zero point (the u8·s8 products x86
VNNI instructions compute). On x86 CPUs without VNNI the weights get 7 bits instead of 8
(onnxruntime's ``reduce_range``), so that its 16-bit pair sums cannot saturate
(:mod:`reslab.inference.cpu_int8`); the file records the choice. Activation ranges come from
calibration images; the calibration method (MinMax, Percentile, Entropy) is a choice because
it trades clipped outliers against resolution.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from reslab.files import atomic_write
from reslab.inference.cpu_int8 import Int8Choice, int8_choice
from reslab.inference.export import METADATA_KEY, export_onnx

__all__ = [
    "CALIBRATION_METHODS",
    "export_onnx_int8",
    "missing_packages",
    "onnx_int8_runner",
    "onnx_runner",
    "onnx_session",
    "onnx_top1_agreement",
    "quantize_onnx",
]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# onnxruntime session option: on x86 CPUs without VNNI, run u8xs8 products as exact (slower)
# u8xu8 ones; no effect elsewhere.
EXACT_INT8_OPTION = "session.x64quantprecision"


def missing_packages() -> str | None:
    """Why the ONNX engines cannot run here (a package to install), or ``None``."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            return f"the ONNX engines need {name}: pip install 'reslab[export]'"
    return None


def onnx_session(
    model: str | Path | bytes,
    threads: int | None = None,
    *,
    spinning: bool = False,
    exact_int8: bool = False,
):
    """An onnxruntime CPU session with every graph optimisation and torch's thread count.

    Args:
        model: an ONNX file, or its bytes.
        threads: intra-op threads (default: torch's).
        spinning: let idle worker threads spin-wait for the next run. Off by default: a
            spinning pool keeps the cores busy after each run, which starves whatever runs
            next on them (PyTorch in an interleaved ladder, other processes); measured on
            2 cores it also made onnxruntime's own batch-1 latency worse under load.
        exact_int8: on an x86 CPU without VNNI, compute an 8-bit int8 graph exactly (as a
            VNNI CPU does) with slower u8xu8 kernels, instead of saturating 16-bit pair sums
            (onnxruntime's ``session.x64quantprecision``; no effect on other CPUs).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if exact_int8:
        options.add_session_config_entry(EXACT_INT8_OPTION, "1")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _session_runner(session) -> Callable[[Tensor], Tensor]:
    name = session.get_inputs()[0].name

    def run(images: Tensor) -> Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(session.run(None, {name: array})[0])

    return run


def onnx_runner(model: nn.Module, example: Tensor) -> Callable[[Tensor], Tensor]:
    """Export ``model`` (dynamic batch) and run the graph on onnxruntime."""
    with tempfile.TemporaryDirectory(prefix="reslab-onnx-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", example)
        return _session_runner(onnx_session(path.read_bytes()))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, input_name: str, batches: list[Tensor]) -> None:
        self._items = iter([{input_name: b.float().contiguous().numpy()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def _calibration_options(method: str) -> tuple[object, dict]:
    from onnxruntime.quantization import CalibrationMethod

    if method == "minmax":
        return CalibrationMethod.MinMax, {}
    if method == "percentile":
        return CalibrationMethod.Percentile, {"CalibPercentile": 99.999}
    if method == "entropy":
        return CalibrationMethod.Entropy, {}
    raise ValueError(f"unknown calibration method {method!r}; expected {CALIBRATION_METHODS}")


def quantize_onnx(
    source: str | Path,
    out: str | Path,
    calib: list[Tensor],
    *,
    method: str = "minmax",
    activations: str = "uint8",
    choice: Int8Choice | None = None,
) -> Path:
    """Write a static int8 (QDQ) copy of the fp32 ONNX file ``source`` to ``out`` atomically.

    The reslab metadata of ``source`` is kept, plus ``"quantization"`` facts: the format,
    activation and weight types, calibration, and the CPU the file is made for (``cpu``:
    this machine's class and flags, ``target``, ``weight_bits`` and why).

    Args:
        source: an fp32 ONNX file from :func:`~reslab.inference.export.export_onnx`.
        out: the ``.onnx`` file to write.
        calib: non-empty list of 0–1 image batches of the data the model is for.
        method: activation ranges from ``"minmax"``, ``"percentile"`` (99.999th) or
            ``"entropy"``.
        activations: ``"uint8"`` (asymmetric, x86 VNNI's operand) or ``"int8"``.
        choice: the CPU it is made for (default: this one, :func:`int8_choice`); on x86
            CPUs without VNNI the weights get 7 bits.
    """
    import json

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method, extra = _calibration_options(method)
    choice = choice or int8_choice()
    act_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activations]
    meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    with tempfile.TemporaryDirectory(prefix="reslab-quant-") as tmp:
        prepped, quantized = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepped))
        input_name = onnx.load(str(prepped), load_external_data=False).graph.input[0].name
        quantize_static(
            str(prepped),
            str(quantized),
            _Reader(input_name, calib),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=choice.weight_bits == 7,
            activation_type=act_type,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate_method,
            extra_options=extra,
        )
        model = onnx.load(str(quantized))
    info = json.loads(meta.get(METADATA_KEY, "{}"))
    info["quantization"] = {
        "format": "QDQ int8, per-channel weights",
        "activations": activations,
        "weights": choice.weights,
        "calibration": method,
        "calibration_images": int(sum(len(b) for b in calib)),
        **choice.to_dict(),
        "note": _runtime_note(choice),
    }
    meta[METADATA_KEY] = json.dumps(info)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    out = Path(out)
    atomic_write(out, lambda tmp: onnx.save(model, tmp))
    return out


def _runtime_note(choice: Int8Choice) -> str:
    if choice.weight_bits == 7:
        return "7-bit weights: exact on every x86 CPU, with or without VNNI"
    return (
        f"8-bit weights: on x86 CPUs without VNNI set the onnxruntime session option "
        f"{EXACT_INT8_OPTION}=1, or products saturate (re-export with --target-cpu any)"
    )


def onnx_int8_runner(
    model: nn.Module, example: Tensor, calib: list[Tensor], **options
) -> Callable[[Tensor], Tensor]:
    """Export, quantise on ``calib`` (``options`` as for :func:`quantize_onnx`) and run."""
    with tempfile.TemporaryDirectory(prefix="reslab-onnx-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", example)
        int8 = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calib, **options)
        return _session_runner(onnx_session(int8.read_bytes()))


def export_onnx_int8(
    model: nn.Module,
    out: str | Path,
    example: Tensor,
    calib: list[Tensor],
    *,
    method: str = "minmax",
    dynamic_batch: bool = True,
    opset: int = 18,
    choice: Int8Choice | None = None,
) -> Path:
    """Export ``model`` to ONNX and write its static int8 (QDQ) quantisation to ``out``.

    The file carries :func:`~reslab.inference.export.export_metadata`'s JSON plus a
    ``"quantization"`` entry (format, activation and weight types, calibration method and
    image count, the CPU it is made for: see :func:`quantize_onnx`).

    Args:
        model: the classifier (eval mode is used; it is not modified).
        out: the ``.onnx`` file to write (atomically).
        example: an input batch (C, H, W fixed; its batch size too if not ``dynamic_batch``).
        calib: non-empty list of 0–1 image batches of the data the model is for.
        method: ``"minmax"``, ``"percentile"`` or ``"entropy"`` activation ranges.
        dynamic_batch: leave the batch dimension free.
        opset: ONNX opset (18 or newer).
        choice: the CPU it is made for (default: this one).
    """
    with tempfile.TemporaryDirectory(prefix="reslab-onnx-") as tmp:
        fp32 = export_onnx(
            model, Path(tmp) / "fp32.onnx", example, dynamic_batch=dynamic_batch, opset=opset
        )
        return quantize_onnx(fp32, out, calib, method=method, choice=choice)


@torch.no_grad()
def onnx_top1_agreement(
    path: str | Path,
    model: nn.Module,
    images: Tensor,
    batch: int | None = None,
    *,
    exact_int8: bool = False,
) -> tuple[float, float]:
    """``(fraction of images whose top-1 class agrees, max |logit difference|)`` between
    the ONNX file ``path`` on onnxruntime and ``model`` in eager fp32.

    Args:
        path: an ONNX file (fp32 or int8).
        model: the PyTorch model it was exported from.
        images: 0–1 images ``(N, C, H, W)``, e.g. held out from calibration.
        batch: run in batches of this size (a fixed-batch file needs its own size).
        exact_int8: compute int8 products as a VNNI CPU does, also on one without VNNI
            (see :func:`onnx_session`).
    """
    run = _session_runner(onnx_session(Path(path).read_bytes(), exact_int8=exact_int8))
    size = batch or 32
    chunks = [c for c in images.split(size) if batch is None or len(c) == size]
    if not chunks:
        raise ValueError(f"no full batch of {size} among {len(images)} images")
    model.eval()
    agree = total = 0
    worst = 0.0
    for chunk in chunks:  # a fixed-batch file cannot take a short remainder: it is left out
        expected, got = model(chunk).float(), run(chunk)
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        total += len(chunk)
        worst = max(worst, float((expected - got).abs().max()))
    return agree / total, worst
