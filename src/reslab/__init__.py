"""reslab: residual networks you can build, verify, open up, train and ship."""

from reslab.api import create_model
from reslab.models import ResNet, list_models
from reslab.training import Learner
from reslab.weights import load_checkpoint, load_weights, save_checkpoint

__version__ = "0.1.0"

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
