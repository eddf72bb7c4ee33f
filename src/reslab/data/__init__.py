"""Data: image decoding, Fashion-MNIST, CIFAR-10, image folders (decoded per epoch or once at
a presize), in-memory loaders."""

from reslab.data.datasets import (
    KNOWN_DATASETS,
    TensorImageDataset,
    load_dataset,
    select_classes,
    split_indices,
)
from reslab.data.decoded import DecodedFolderDataset, decode_image_folder
from reslab.data.decoded_loader import DecodedLoader
from reslab.data.folder import (
    ImageFolderDataset,
    mix_seeds,
    read_small_image_folder,
    scan_image_folder,
)
from reslab.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from reslab.data.loaders import FolderLoader, TensorLoader, make_loader
from reslab.data.locate import DATA_ENV, DataNotFoundError, search_dirs
from reslab.data.resample import resize_images, resized_crops
from reslab.data.transforms import (
    EvalTransform,
    Presized,
    TrainTransform,
    eval_transform_from_cfg,
    presize_image,
)

__all__ = [
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "KNOWN_DATASETS",
    "DataNotFoundError",
    "DecodedFolderDataset",
    "DecodedLoader",
    "EvalTransform",
    "FolderLoader",
    "ImageDecodeError",
    "ImageFolderDataset",
    "TensorImageDataset",
    "TensorLoader",
    "Presized",
    "TrainTransform",
    "decode_image_folder",
    "eval_transform_from_cfg",
    "load_dataset",
    "load_image",
    "make_loader",
    "mix_seeds",
    "presize_image",
    "read_small_image_folder",
    "resize_images",
    "resized_crops",
    "scan_image_folder",
    "search_dirs",
    "select_classes",
    "split_indices",
]
