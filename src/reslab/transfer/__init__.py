"""Transfer learning: freezing (BatchNorm pinned), channel surgery, cached backbone features,
and fastai's fine-tuning recipe with discriminative learning rates."""

from reslab.transfer.features import (
    FeatureLoader,
    FeatureSet,
    ViewAverage,
    extract_features,
    load_features,
    save_features,
    state_digest,
)
from reslab.transfer.fine_tune import (
    discriminative_groups,
    discriminative_param_groups,
    fine_tune,
)
from reslab.transfer.freeze import (
    freeze,
    is_batchnorm,
    layer_groups,
    trainable_summary,
    unfreeze,
)
from reslab.transfer.surgery import adapt_to_grayscale, resize_and_repeat

__all__ = [
    "FeatureLoader",
    "FeatureSet",
    "ViewAverage",
    "adapt_to_grayscale",
    "discriminative_groups",
    "discriminative_param_groups",
    "extract_features",
    "fine_tune",
    "freeze",
    "is_batchnorm",
    "layer_groups",
    "load_features",
    "resize_and_repeat",
    "save_features",
    "state_digest",
    "trainable_summary",
    "unfreeze",
]
