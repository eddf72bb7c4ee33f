"""Data: image decoding, Fashion-MNIST, CIFAR-10, image folders, in-memory loaders."""

from reslab.data.datasets import (
    KNOWN_DATASETS,
    TensorImageDataset,
    load_dataset,
    select_classes,
    split_indices,
)
from reslab.data.folder import (
    ImageFolderDataset,
    mix_seeds,
    read_small_image_folder,
    scan_image_folder,
)
from reslab.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from reslab.data.loaders import FolderLoader, TensorLoader, make_loader
from reslab.data.locate import DATA_ENV, DataNotFoundError, search_dirs
from reslab.data.transforms import EvalTransform, TrainTransform, eval_transform_from_cfg

__all__ = [
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS",
    "DataNotFoundError",
    "EvalTransform",
    "FolderLoader",
    "ImageDecodeError",
    "ImageFolderDataset",
    "TensorImageDataset",
    "TensorLoader",
    "TrainTransform",
    "eval_transform_from_cfg",
    "load_dataset",
    "load_image",
    "make_loader",
    "mix_seeds",
    "read_small_image_folder",
    "scan_image_folder",
    "search_dirs",
    "select_classes",
    "split_indices",
]
