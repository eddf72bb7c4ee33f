"""Inference: classify image files with a model's own preprocessing and class names; export."""

from reslab.inference.classes import imagenet_wnids, restrict_class_index
from reslab.inference.export import export_onnx, export_torchscript, fold_batchnorm
from reslab.inference.predict import (
    Prediction,
    class_names_of,
    load_for_model,
    predict_files,
    predict_tensor,
)

__all__ = [
    "Prediction",
    "class_names_of",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "imagenet_wnids",
    "load_for_model",
    "predict_files",
    "predict_tensor",
    "restrict_class_index",
]
