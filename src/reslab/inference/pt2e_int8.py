"""Static int8 quantisation in PyTorch: PT2E with torchao's x86 inductor quantizer.

The model is captured with ``torch.export`` in *strict* mode. The quantizer finds its
conv + add + ReLU patterns by source module; the default (non-strict) capture of torch 2.14
records a ReLU module that a block calls two or three times (torchvision's Bottleneck) as one
source with several outputs, and the quantizer stops with "Input partition has more than one
output node". Strict capture records every call on its own. BatchNorm is folded by
``prepare_pt2e`` itself; weights are per-channel symmetric int8 (7-bit, −64..63, on x86 CPUs
without VNNI, whose oneDNN kernels sum u8×s8 pairs in 16 bits: :mod:`.cpu_int8`), activations
per-tensor uint8 (what oneDNN's VNNI kernels take). The result is meant to be run under
``torch.compile`` with frozen weights, where inductor lowers the quantised patterns to oneDNN
int8 kernels.

Strict ``torch.export`` in torch 2.14 calls ``torch._dynamo.reset()``: :func:`quantize` throws
away everything ``torch.compile`` has compiled in this process, and a compiled model made
before it compiles again on its next call (the ladder therefore warms up after it).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["missing_packages", "quantize"]


def missing_packages() -> str | None:
    """Why this engine cannot run here (a package to install), or ``None``."""
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except ImportError:
        return (
            "PyTorch int8 (PT2E) needs torchao: pip install torchao (torch 2.14 moved the "
            "PT2E quantizers out of torch.ao)"
        )
    return None


def quantize(
    model: nn.Module,
    example: Tensor,
    calib: list[Tensor],
    *,
    weight_bits: int = 8,
    activation_bits: int = 8,
) -> nn.Module:
    """An int8 (simulated until compiled) copy of eval-mode ``model``, calibrated on ``calib``.

    Args:
        model: an eval-mode model built from torch.nn layers (not modified).
        example: an input batch (its C, H, W are fixed; the batch stays free).
        calib: non-empty list of 0–1 image batches of the data the model is for.
        weight_bits: 8 (−128..127), or 7 (−64..63) for x86 CPUs without VNNI.
        activation_bits: 8 (0..255), or 7 (0..127: torchao's ``reduce_range``).
    """
    import dataclasses

    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    if example.shape[0] == 1:
        example = example.expand(2, *example.shape[1:])  # export specialises size-1 dims
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(
            model, (example.contiguous(),), dynamic_shapes=({0: batch},), strict=True
        )
    if weight_bits not in (7, 8) or activation_bits not in (7, 8):
        raise ValueError(f"bits must be 7 or 8, got {weight_bits} and {activation_bits}")
    config = get_default_x86_inductor_quantization_config(reduce_range=activation_bits == 7)
    if weight_bits == 7:
        weight = dataclasses.replace(config.weight, quant_min=-64, quant_max=63)
        config = dataclasses.replace(config, weight=weight)
    quantizer = X86InductorQuantizer()
    quantizer.set_global(config)
    prepared = prepare_pt2e(program.module(), quantizer)
    with torch.no_grad():
        for images in calib:
            prepared(images)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted
