"""Ship a model: fold BatchNorm into the convolutions, write TorchScript or ONNX.

An exported file runs without reslab: the model's input normalisation is inside it (when it
was built with ``normalize=True``), and its class names, input size and preprocessing facts
travel with it as JSON, in the ONNX ``metadata_props`` (key ``"reslab"``) or the TorchScript
extra file ``reslab.json``. :func:`read_export_metadata` reads either.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

import torch
from torch import Tensor, nn

from reslab.files import atomic_write
from reslab.inference.predict import class_names_of
from reslab.models import ResNet
from reslab.version import __version__

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_KEY",
    "export_metadata",
    "export_onnx",
    "export_torchscript",
    "fold_batchnorm",
    "max_abs_difference",
    "read_export_metadata",
    "to_torch_layers",
]

EXPORT_FORMATS = ("onnx", "torchscript")
METADATA_KEY = "reslab"  # ONNX metadata_props key; TorchScript extra file "reslab.json"
_TS_EXTRA = "reslab.json"
_MIN_OPSET = 18  # the torch.export-based exporter's own opset; 17 needs a lossy down-conversion
_M = TypeVar("_M", bound=nn.Module)


# ---------------------------------------------------------------------------- BN folding
_Types = tuple[type[Any], ...]  # Any: their attributes (eps, running_mean...) are read below


def _layer_types(model: nn.Module) -> tuple[_Types, _Types, _Types]:
    """(conv, batch norm, sequential) classes: torch's, plus the model's own layer set's."""
    convs: list[type[Any]] = [nn.Conv2d]
    bns: list[type[Any]] = [nn.BatchNorm2d]
    seqs: list[type[Any]] = [nn.Sequential]
    ls = getattr(model, "layer_set", None)
    if ls is not None:
        convs.append(ls.conv2d)
        bns.append(ls.batch_norm2d)
        seqs.append(ls.sequential)
    return tuple(convs), tuple(bns), tuple(seqs)


def _last_conv(module: nn.Module, convs: tuple, seqs: tuple) -> nn.Module | None:
    """The conv whose output ``module`` returns: itself, or a Sequential's last child's."""
    if isinstance(module, convs):
        return module
    if isinstance(module, seqs):
        children = list(module.children())
        return _last_conv(children[-1], convs, seqs) if children else None
    return None


def _conv_bn_pairs(model: nn.Module) -> list[tuple[Any, Any, nn.Module, str]]:
    """``(conv, bn, bn_parent, bn_name)`` for every BN that directly consumes a conv's output.

    reslab builds every such pair in one of two ways, and only these are trusted:
    consecutive children of a Sequential (deep stem, shortcuts ``downsample.0/1`` and
    ``downsample.1/2``), and siblings named ``convK``/``bnK`` (blocks' ``conv1``/``bn1``…,
    and the model's stem ``conv1``/``bn1``, where ``conv1`` may be a deep-stem Sequential
    whose last layer is the conv). A BN that is neither stays as it is: still correct.
    """
    convs, bns, seqs = _layer_types(model)
    pairs: list[tuple[Any, Any, nn.Module, str]] = []
    seen: set[int] = set()

    # conv and bn: torch.nn's or the layer set's (the scratch twins have the same attributes)
    def add(conv: Any, bn: Any, parent: nn.Module, name: str) -> None:
        if conv is None or not isinstance(bn, bns) or id(bn) in seen or id(conv) in seen:
            return
        if bn.running_mean is None or conv.out_channels != bn.num_features:
            return  # batch statistics at eval time, or not a real pair: nothing to fold
        seen.update((id(bn), id(conv)))
        pairs.append((conv, bn, parent, name))

    for parent in model.modules():
        children = list(parent.named_children())
        if isinstance(parent, seqs):
            for (_, a), (name, b) in zip(children, children[1:]):
                add(_last_conv(a, convs, seqs), b, parent, name)
        siblings = dict(children)
        for name, child in children:
            match = re.fullmatch(r"conv(\d*)", name)
            if match and f"bn{match.group(1)}" in siblings:
                bn_name = f"bn{match.group(1)}"
                add(_last_conv(child, convs, seqs), siblings[bn_name], parent, bn_name)
    return pairs


@torch.no_grad()
def _fold_into(conv: Any, bn: Any) -> None:  # torch.nn's conv and BN, or the scratch twins
    # float64 so that the folded weights are the closest float32s to the exact product.
    w = conv.weight
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=w.requires_grad)


def fold_batchnorm(model: _M) -> _M:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the conv before it.

    ``w' = w * gamma / sqrt(var + eps)`` per output channel and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BN becomes an identity. The
    copy computes what ``model.eval()`` computes, with fewer layers (faster inference, simpler
    exported graphs), but it can no longer be trained as before. Works for both layer sets.
    The number of folded layers is kept as ``folded.folded_batchnorms``.

    Args:
        model: a ResNet (or any module built from Sequential conv/BN pairs or ``convK``/``bnK``
            siblings); it is not modified.
    """
    folded = copy.deepcopy(model).eval()
    ls = getattr(folded, "layer_set", None)
    identity = ls.identity if ls is not None else nn.Identity
    pairs = _conv_bn_pairs(folded)
    for conv, bn, parent, name in pairs:
        _fold_into(conv, bn)
        setattr(parent, name, identity())
    # A plain attribute (nn.Module's __setattr__ is typed for tensors and modules only).
    vars(folded)["folded_batchnorms"] = getattr(model, "folded_batchnorms", 0) + len(pairs)
    return folded


@overload
def to_torch_layers(model: ResNet) -> ResNet: ...
@overload
def to_torch_layers(model: nn.Module) -> nn.Module: ...
def to_torch_layers(model: nn.Module) -> nn.Module:
    """``model`` itself if it is built from torch.nn layers, else its torch.nn twin.

    The from-scratch layers run custom autograd functions that neither tracer can record;
    their state dicts are torch's, so the twin has the same weights and outputs.

    Args:
        model: a model from :func:`reslab.create_model` / :func:`reslab.load_checkpoint`.
    """
    ls = getattr(model, "layer_set", None)
    if ls is None or ls.name == "torch":
        return model
    if not isinstance(model, ResNet):
        raise ValueError(f"cannot export a {ls.name}-layer {type(model).__name__}")
    twin = ResNet.from_config(model.config, "torch")
    if getattr(model, "folded_batchnorms", 0):
        twin = fold_batchnorm(twin)  # same structure, so the folded state dict fits
    twin.load_state_dict(model.state_dict())
    _copy_norm_settings(model, twin)
    return twin.train(model.training)


def _copy_norm_settings(model: nn.Module, twin: nn.Module) -> None:
    # eps and momentum are settings, not state: the config-built twin has the defaults.
    source = dict(model.named_modules())
    for name, norm in twin.named_modules():
        if isinstance(norm, nn.BatchNorm2d) and name in source:
            norm.eps = getattr(source[name], "eps", norm.eps)
            norm.momentum = getattr(source[name], "momentum", norm.momentum)


# ---------------------------------------------------------------------------- metadata
def export_metadata(model: nn.Module) -> dict[str, Any]:
    """What a user needs to run the exported file without reslab (stored inside it).

    Args:
        model: the model being exported.
    """
    cfg = dict(getattr(model, "default_cfg", {}) or {})
    inside = cfg.get("normalize") is not None
    return {
        "architecture": cfg.get("architecture"),
        "input_name": "images",
        "output_name": "logits",
        "input_size": list(cfg.get("input_size", (3, 224, 224))),
        "input": "float32 NCHW, RGB in 0-1 (normalisation is inside the model)"
        if inside
        else "float32 NCHW, RGB in 0-1, then (x - mean) / std per channel",
        "normalize_inside": inside,
        "normalize": cfg.get("normalize"),
        "mean": list(cfg.get("mean", ())),
        "std": list(cfg.get("std", ())),
        "crop_pct": cfg.get("crop_pct"),
        "interpolation": cfg.get("interpolation"),
        "class_names": class_names_of(model),
        "folded_batchnorms": getattr(model, "folded_batchnorms", 0),
        "exported_by": f"reslab {__version__}",
    }


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON that :func:`export_onnx` / :func:`export_torchscript` stored in ``path``.

    Args:
        path: a ``.onnx`` file or a TorchScript file.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
        return json.loads(props.get(METADATA_KEY, "{}"))
    extra = {_TS_EXTRA: ""}
    with _quiet_jit():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[_TS_EXTRA] or "{}")


# ---------------------------------------------------------------------------- export
@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.14 marks torch.jit deprecated (FutureWarning on every call); TorchScript files
    # still load in C++/LibTorch, which is why the format is offered. The tracer's warning
    # about the input-shape check is expected: that Python bool is rightly baked in.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[nn.Module]:
    # Export in eval mode (running BN stats, no drop-path) without changing the caller's model.
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def export_torchscript(
    model: nn.Module, path: str | Path, example: Tensor, *, metadata: dict | None = None
) -> Path:
    """Trace ``model`` on ``example`` and save it atomically; load it with ``torch.jit.load``.

    Tracing records no batch size, so the file takes any batch of the example's C, H, W (the
    torch-layer model also scripts with ``torch.jit.script``, which keeps its input check).

    Args:
        model: the model (eval mode is used; scratch layers are swapped for torch.nn twins).
        path: file to write (``.torchscript`` or ``.pt`` by convention).
        example: an input batch, e.g. ``torch.rand(2, *input_size)``.
        metadata: JSON stored as the extra file ``reslab.json`` (default: :func:`export_metadata`).
    """
    model = to_torch_layers(model)
    meta = json.dumps(metadata if metadata is not None else export_metadata(model))
    with _eval(model), torch.no_grad(), _quiet_jit():
        traced = torch.jit.trace(model, (example,))
        path = Path(path)
        atomic_write(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files={_TS_EXTRA: meta}))
    return path


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    opset: int = _MIN_OPSET,
    dynamic_batch: bool = True,
    metadata: dict | None = None,
) -> Path:
    """Export ``model`` to ONNX with torch's ``torch.export``-based exporter; write atomically.

    Needs ``onnx`` and ``onnxscript`` (``pip install 'reslab[export]'``). Input ``images``,
    output ``logits``; the reslab metadata JSON is ``metadata_props["reslab"]``.

    Args:
        model: the model (eval mode is used; scratch layers are swapped for torch.nn twins).
        path: ``.onnx`` file to write (one file: ResNets are far below protobuf's 2 GB limit).
        example: an input batch; its C, H, W are fixed in the graph.
        opset: ONNX opset, 18 or newer (the exporter cannot reliably write older ones).
        dynamic_batch: leave the batch dimension free; else it is the example's.
        metadata: JSON to store (default: :func:`export_metadata`).
    """
    if opset < _MIN_OPSET:
        raise ValueError(f"ONNX opset {opset} is too old; the exporter writes {_MIN_OPSET}+")
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"ONNX export needs {err.name}: pip install 'reslab[export]'", name=err.name
        ) from None
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:  # the exporter would warn and quietly write an older opset
        raise ValueError(f"ONNX opset {opset} is newer than this onnx knows ({newest})")
    model = to_torch_layers(model)
    meta = json.dumps(metadata if metadata is not None else export_metadata(model))
    dynamic_shapes = None
    if dynamic_batch:
        if example.shape[0] == 1:
            # torch.export specialises size-1 dimensions; a batch of 2 keeps the batch symbolic.
            example = example.expand(2, *example.shape[1:]).contiguous()
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},)
    with _eval(model), torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    assert program is not None  # the torch.export-based exporter (dynamo=True) returns one
    program.model.metadata_props[METADATA_KEY] = meta
    path = Path(path)
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
    return path


@torch.no_grad()
def max_abs_difference(path: str | Path, model: nn.Module, x: Tensor) -> float:
    """Largest ``|exported(x) - model(x)|``; ONNX files run on onnxruntime's CPU provider.

    Args:
        path: a file written by :func:`export_onnx` or :func:`export_torchscript`.
        model: the PyTorch model to compare with (run in eval mode).
        x: an input batch.
    """
    with _eval(model):
        ref = model(x).float().cpu()
    if Path(path).suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "comparing an ONNX file needs onnxruntime: pip install onnxruntime",
                name="onnxruntime",
            ) from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = torch.from_numpy(session.run(None, {name: x.cpu().numpy()})[0])
    else:
        with _quiet_jit():
            out = torch.jit.load(str(path), map_location="cpu")(x.cpu()).float()
    return float((out - ref).abs().max())
