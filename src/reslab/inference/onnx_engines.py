"""onnxruntime engines: the exported fp32 graph, and its static int8 quantisation.

The int8 graph is written in QDQ form (QuantizeLinear/DequantizeLinear pairs around each
quantised op, which onnxruntime fuses into int8 kernels): weights per output channel,
symmetric int8; activations per tensor, uint8 with a zero point (the u8·s8 products x86
VNNI instructions compute). Activation ranges come from calibration images; the calibration
method (MinMax, Percentile, Entropy) is a choice because it trades clipped outliers against
resolution.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from reslab.inference.export import METADATA_KEY, export_onnx
from reslab.weights.io import atomic_write

__all__ = [
    "CALIBRATION_METHODS",
    "missing_packages",
    "onnx_int8_runner",
    "onnx_runner",
    "onnx_session",
    "quantize_onnx",
]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def missing_packages() -> str | None:
    """Why the ONNX engines cannot run here (a package to install), or ``None``."""
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            return f"the ONNX engines need {name}: pip install 'reslab[export]'"
    return None


def onnx_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session with every graph optimisation and torch's thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
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
) -> Path:
    """Write a static int8 (QDQ) copy of the fp32 ONNX file ``source`` to ``out`` atomically.

    The reslab metadata of ``source`` is kept, plus ``"quantization"`` facts.

    Args:
        source: an fp32 ONNX file from :func:`~reslab.inference.export.export_onnx`.
        out: the ``.onnx`` file to write.
        calib: non-empty list of 0–1 image batches of the data the model is for.
        method: activation ranges from ``"minmax"``, ``"percentile"`` (99.999th) or
            ``"entropy"``.
        activations: ``"uint8"`` (asymmetric, x86 VNNI's operand) or ``"int8"``.
    """
    import json

    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate_method, extra = _calibration_options(method)
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
        "calibration": method,
        "calibration_images": int(sum(len(b) for b in calib)),
    }
    meta[METADATA_KEY] = json.dumps(info)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    out = Path(out)
    atomic_write(out, lambda tmp: onnx.save(model, tmp))
    return out


def onnx_int8_runner(
    model: nn.Module, example: Tensor, calib: list[Tensor], **options
) -> Callable[[Tensor], Tensor]:
    """Export, quantise on ``calib`` (``options`` as for :func:`quantize_onnx`) and run."""
    with tempfile.TemporaryDirectory(prefix="reslab-onnx-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", example)
        int8 = quantize_onnx(fp32, Path(tmp) / "int8.onnx", calib, **options)
        return _session_runner(onnx_session(int8.read_bytes()))
