"""torch.hub entry points: one per registered reslab model.

    import torch
    model = torch.hub.load("path/to/reslab", "resnet20", source="local",
                           pretrained="reslab-fashion-mnist")
    import reslab
    names = reslab.list_models()   # the entry points: one per registered model

(``torch.hub.list`` and ``torch.hub.help`` read GitHub repositories only, not a local folder.)

Each entry point is ``reslab.create_model(name, pretrained=..., **kwargs)``: ``pretrained`` is
a weights tag (``reslab weights list``; shipped tags such as ``reslab-fashion-mnist`` work
offline, torchvision's ``IMAGENET1K_V1``/``V2`` download once, the Keras ResNet-50's
``keras-imagenet`` needs ``reslab weights fetch keras-resnet50`` first), a weights file or a
URL with a checksum; ``True`` means the model's one default tag (torchvision's ``DEFAULT``, or
its only tag). From a plain checkout the package is imported from ``src/``.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "numpy", "tqdm", "safetensors"]

_SRC = _Path(__file__).resolve().parent / "src"
if "reslab" not in _sys.modules and (_SRC / "reslab" / "__init__.py").is_file():
    # A plain checkout: this repository's package, ahead of any other installed copy.
    _sys.path.insert(0, str(_SRC))

import reslab as _reslab  # noqa: E402
from reslab.models import get_model_spec as _get_model_spec  # noqa: E402
from reslab.weights import list_tags as _list_tags  # noqa: E402


def _default_tag(name: str) -> str:
    """The tag ``pretrained=True`` stands for: torchvision's DEFAULT, or the model's only tag."""
    tags = [t.tag for t in _list_tags(name)]
    if any(t.startswith("IMAGENET1K_") for t in tags):
        return "DEFAULT"
    if len(tags) == 1:
        return tags[0]
    if not tags:
        raise ValueError(f"{name} has no pretrained weights; call it with pretrained=None")
    raise ValueError(f"{name} has several weights, pass one: pretrained={' or '.join(tags)}")


def _entry_point(name: str):
    def entry(pretrained=None, **kwargs):
        if pretrained is True:
            pretrained = _default_tag(name)
        elif pretrained is False:
            pretrained = None
        return _reslab.create_model(name, pretrained=pretrained, **kwargs)

    tags = ", ".join(t.tag for t in _list_tags(name)) or "none"
    description = _get_model_spec(name).description
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"{description}.\n\n"
        f"pretrained: a weights tag (here: {tags}), a weights file or URL, True for the\n"
        "default tag, or None for random weights. Other keyword arguments go to\n"
        "reslab.create_model (num_classes, in_chans, layers, normalize, architecture options)."
    )
    return entry


for _name in _reslab.list_models():
    globals()[_name] = _entry_point(_name)
del _name
