"""Data: image decoding, Fashion-MNIST, CIFAR-10, image folders, in-memory loaders."""

from reslab.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageDecodeError", "load_image"]
