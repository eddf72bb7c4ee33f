"""Class activation maps: where in an image a classifier found the evidence for a class.

Three methods, all returning one map per image in [0, 1] at the input's resolution:

- ``"gradcam"``: Grad-CAM (Selvaraju et al., 2017).
- ``"gradcam++"``: Grad-CAM++ (Chattopadhyay et al., 2018).
- ``"saliency"``: the plain input gradient (Simonyan et al., 2014).

The model is used as it is: in eval mode for the call, its hooks removed afterwards, its
parameters, their ``.grad`` and ``requires_grad`` untouched.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CAM_METHODS", "eval_mode", "gradcam"]

CAM_METHODS = ("gradcam", "gradcam++", "saliency")

Target = int | Sequence[int] | Tensor | None


def gradcam(
    model: nn.Module,
    images: Tensor,
    target: Target = None,
    layer: str | nn.Module | None = None,
    *,
    method: str = "gradcam",
    batch_size: int | None = None,
) -> Tensor:
    """Class activation maps of ``images``, shape ``(N, H, W)``, each min-max scaled to [0, 1].

    With ``A`` the chosen layer's activations (channels ``k``) and ``g = dS/dA`` the
    gradient of the target class's logit ``S``:

    - ``"gradcam"``: ``ReLU(sum_k w_k A_k)`` with ``w_k`` the spatial mean of ``g_k``.
    - ``"gradcam++"``: the same sum with ``w_k = sum_ij alpha_kij ReLU(g_kij)`` and the
      closed form for an exponential score, ``alpha = g^2 / (2 g^2 + sum_ij(A_k) g^3)``
      (0 where the denominator is 0).
    - ``"saliency"``: ``max_c |dS/dx_c|`` over the input's channels (takes no ``layer``).

    Layer maps are upsampled bilinearly to the input's size, then every map is min-max
    scaled on its own, so each spans exactly [0, 1]; a map that is constant (all zero, or
    from a 1x1 feature map) comes back all zero.

    Each image's map depends on that image alone: the model runs in eval mode (BatchNorm
    uses its running statistics) and the differentiated score is the sum over the batch
    of each image's own target logit. ``batch_size`` only bounds memory.

    Args:
        model: a classifier returning logits ``(N, num_classes)``.
        images: ``(N, C, H, W)``, as the model takes them.
        target: class per image: ``None`` (each image's top-1 class), one ``int`` for all,
            or a sequence / tensor of ``N`` class indices.
        layer: a module name (``"layer4"``, ``"layer3.2"``) or a module of ``model``.
            Default: the last stage (``model.stage_names[-1]``: ``layer4`` for ImageNet
            nets, ``layer3`` for CIFAR nets), or for other models the last direct child
            whose output is a feature map larger than 1x1.
        method: one of :data:`CAM_METHODS`.
        batch_size: images per forward/backward pass (default: all at once).
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(CAM_METHODS)}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (N, C, H, W), got {shape}")
    if method == "saliency" and layer is not None:
        raise ValueError("saliency is the gradient with respect to the input: pass layer=None")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    named = None if method == "saliency" else _resolve_layer(model, layer)
    targets = _target_tensor(target, len(images))
    step = batch_size or max(len(images), 1)
    maps = []
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        for start in range(0, len(images), step):
            chunk = images[start : start + step]
            t = None if targets is None else targets[start : start + step]
            maps.append(_explain_batch(model, chunk, t, named, method))
    if not maps:
        return images.new_zeros((0, *images.shape[-2:]))
    return torch.cat(maps)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode, then restore each one's own flag.

    Restoring per module (not ``model.train(was)``) keeps mixed states intact, such as
    BatchNorms pinned in eval inside a training model.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


# ----------------------------------------------------------------------------- one batch
def _explain_batch(
    model: nn.Module,
    images: Tensor,
    target: Tensor | None,
    named: tuple[str, nn.Module] | None,
    method: str,
) -> Tensor:
    # A fresh leaf that requires grad: the graph is recorded even for frozen models, and
    # autograd.grad w.r.t. it (or the activations) never touches the parameters' .grad.
    x = images.detach().clone().requires_grad_(True)
    if method == "saliency":
        score = _target_score(model(x), target)
        (grad,) = torch.autograd.grad(score, x)
        return _min_max(grad.abs().amax(1))
    name, acts, logits = _forward_capturing(model, x, named)
    score = _target_score(logits, target)
    (grad,) = torch.autograd.grad(score, acts, allow_unused=True)
    if grad is None:
        raise ValueError(f"layer {name!r} does not feed the model's output")
    acts = acts.detach()
    weights = _gradcam_weights(grad) if method == "gradcam" else _gradcampp_weights(acts, grad)
    cam = torch.relu((weights[:, :, None, None] * acts).sum(1, keepdim=True))
    # Tell constant maps (all zero, or a 1x1 layer) at the layer's resolution: upsampling
    # rounds a constant into a few ulps of noise that min-max scaling would blow up.
    flat = cam.flatten(1)
    constant = flat.amax(1) == flat.amin(1)
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return _min_max(cam[:, 0]).masked_fill(constant[:, None, None], 0.0)


def _gradcam_weights(grad: Tensor) -> Tensor:
    return grad.mean((2, 3))


def _gradcampp_weights(acts: Tensor, grad: Tensor) -> Tensor:
    g2 = grad * grad
    denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g2 * grad
    nonzero = denom != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, 1), 0)
    return (alpha * torch.relu(grad)).sum((2, 3))


def _min_max(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low = flat.amin(1)[:, None, None]
    span = flat.amax(1)[:, None, None] - low
    return (maps - low) / torch.where(span > 0, span, 1)


def _target_score(logits: Tensor, target: Tensor | None) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, num_classes), got {shape}")
    num_classes = logits.shape[1]
    if target is None:
        target = logits.detach().argmax(1)
    target = target.to(logits.device)
    bad = (target < 0) | (target >= num_classes)
    if bad.any():
        raise ValueError(
            f"target class {int(target[bad][0])} out of range for {num_classes} classes"
        )
    # The sum of each image's own logit: its gradient w.r.t. image i involves image i only.
    return logits.gather(1, target[:, None]).sum()


def _target_tensor(target: Target, n: int) -> Tensor | None:
    if target is None:
        return None
    if isinstance(target, bool) or (isinstance(target, Tensor) and target.dtype == torch.bool):
        raise TypeError("target must be class indices, not booleans")
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"target must be integer class indices, got {t.dtype}")
    if t.dim() == 0:
        return t.long().expand(n)
    if t.shape != (n,):
        raise ValueError(f"expected {n} target classes (one per image), got shape {tuple(t.shape)}")
    return t.long()


# ----------------------------------------------------------------------------- the layer
def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Module] | None:
    """``(name, module)`` of the layer to explain, or None: find it during the forward pass."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"the given {type(layer).__name__} is not a module of the model")
    if layer is None:
        stages = getattr(model, "stage_names", None)
        if not stages:
            return None
        layer = stages[-1]
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name or a module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, [n for n in modules if n], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        stages = getattr(model, "stage_names", None)
        hint += f" (stages: {', '.join(stages)})" if stages else ""
        raise ValueError(f"unknown layer {layer!r}{hint}")
    return layer, modules[layer]


def _forward_capturing(
    model: nn.Module, x: Tensor, named: tuple[str, nn.Module] | None
) -> tuple[str, Tensor, Tensor]:
    """Run the model, keeping the layer's output: ``(layer name, activations, logits)``."""
    candidates = [named] if named is not None else list(model.named_children())
    calls: list[tuple[str, Tensor]] = []

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> object:
            if not isinstance(output, Tensor):
                return None
            calls.append((name, output))
            # Hand a copy on, so that in-place ops downstream (ReLU(inplace=True)) cannot
            # overwrite the activations kept here or re-route their gradient.
            return output.clone()

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in candidates]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    if named is not None:
        return (named[0], _single_call(named[0], calls), logits)
    name, acts = _last_feature_map(model, calls)
    return name, acts, logits


def _single_call(name: str, calls: list[tuple[str, Tensor]]) -> Tensor:
    if not calls:
        raise ValueError(f"layer {name!r} did not run (or returned no tensor) in the forward pass")
    if len(calls) > 1:
        raise ValueError(
            f"layer {name!r} ran {len(calls)} times in one forward pass; pick a module that "
            "runs once (e.g. a block, not a ReLU it reuses)"
        )
    acts = calls[0][1]
    if acts.dim() != 4:
        raise ValueError(
            f"layer {name!r} outputs shape {tuple(acts.shape)}; "
            "a class activation map needs a 4-D (N, C, H, W) feature map"
        )
    return acts


def _last_feature_map(model: nn.Module, calls: list[tuple[str, Tensor]]) -> tuple[str, Tensor]:
    maps = [(name, t) for name, t in calls if t.dim() == 4]
    if not maps:
        raise ValueError(
            f"no child module of {type(model).__name__} outputs a 4-D (N, C, H, W) feature "
            "map; pass layer= to choose one"
        )
    larger = [(name, t) for name, t in maps if t.shape[-2] * t.shape[-1] > 1]
    return (larger or maps)[-1]
