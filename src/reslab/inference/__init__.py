"""Inference: classify image files with a model's own preprocessing and class names; export;
run a model on an engine (eager, fast, compiled, bf16, int8, onnxruntime) and compare them."""

from reslab.inference.calibration import CalibrationError, calibration_batches, calibration_images
from reslab.inference.classes import imagenet_wnids, restrict_class_index
from reslab.inference.cpu_int8 import INT8_TARGETS, CpuInt8, Int8Choice, cpu_int8, int8_choice
from reslab.inference.engines import (
    ENGINE_NAMES,
    Engine,
    EngineUnavailable,
    Runner,
    fast_model,
    fixed_batch,
    get_engine,
)
from reslab.inference.export import export_onnx, export_torchscript, fold_batchnorm
from reslab.inference.ladder import Ladder, Rung, cpu_peak, format_ladder, run_ladder
from reslab.inference.ladder_inputs import environment, ladder_eval_data, torchvision_twin
from reslab.inference.onnx_engines import (
    CALIBRATION_METHODS,
    export_onnx_int8,
    onnx_top1_agreement,
    quantize_onnx,
)
from reslab.inference.predict import (
    Prediction,
    class_names_of,
    load_for_model,
    predict_files,
    predict_tensor,
)

__all__ = [
    "CALIBRATION_METHODS",
    "ENGINE_NAMES",
    "INT8_TARGETS",
    "CalibrationError",
    "CpuInt8",
    "Engine",
    "EngineUnavailable",
    "Int8Choice",
    "Ladder",
    "Prediction",
    "Rung",
    "Runner",
    "calibration_batches",
    "calibration_images",
    "class_names_of",
    "cpu_int8",
    "cpu_peak",
    "environment",
    "export_onnx",
    "export_onnx_int8",
    "export_torchscript",
    "fast_model",
    "fixed_batch",
    "fold_batchnorm",
    "format_ladder",
    "get_engine",
    "imagenet_wnids",
    "int8_choice",
    "ladder_eval_data",
    "load_for_model",
    "onnx_top1_agreement",
    "predict_files",
    "predict_tensor",
    "quantize_onnx",
    "restrict_class_index",
    "run_ladder",
    "torchvision_twin",
]
