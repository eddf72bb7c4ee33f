"""reslab: residual networks you can build, verify, open up, train and ship."""

from reslab.models import ResNet, list_models
from reslab.training import Learner
from reslab.version import __version__
from reslab.weights import create_model, load_checkpoint, load_weights, save_checkpoint

__all__ = [
    "Learner",
    "ResNet",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
]
