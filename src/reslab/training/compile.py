"""Training through ``torch.compile``: the forward pass and its backward, compiled."""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from reslab.layers.compiled_batch_norm import batch_norm_for_compile
from reslab.training.callback import Callback

__all__ = ["Compile"]


class Compile(Callback):
    """Train through ``torch.compile(model)`` (TorchInductor): the forward pass and, through
    AOTAutograd, its backward are compiled into fused kernels; the optimizer step stays eager.

    Only ``learn.forward_model`` (what the training forward goes through) is replaced, for the
    length of a fit; ``learn.model`` stays the plain module, so checkpoints keep their state-dict
    keys (no ``_orig_mod.`` prefix), EMA and resume work as before, and validation runs eager.
    The first batches of a fit pay for the compilation (and a fit of another input shape or
    mode compiles again); the graph is cached for later fits of the same model.

    With ``$ATEN_CPU_CAPABILITY`` set (a machine made to run another CPU's kernels) and no
    cache folder of its own (``$TORCHINDUCTOR_CACHE_DIR``), inductor's FX-graph cache is off
    for the fit: torch 2.14's cache does not key its entries on that variable, and served an
    AVX2 run the graphs compiled for AVX-512 (ResNet-20's logits wrong, a NaN loss at the first
    step; BENCHMARKS.md, "An AVX2-only CPU").

    On the CPU, for the fit, the model's ``nn.BatchNorm2d`` layers train through
    :func:`reslab.layers.compiled_batch_norm.batch_norm_for_compile` (the same arithmetic, in
    a form inductor's CPU code runs faster; ``batch_norm=False`` keeps torch's). On a GPU
    torch's batch norm is kept (inductor's Triton kernels are generated another way, and the
    change was not measured there).

    Args:
        mode: ``torch.compile``'s mode (``None``: the default; ``"max-autotune"`` tries more
            kernels for longer).
        batch_norm: on the CPU, train BatchNorm2d layers through reslab's compiled-path
            batch norm.
    """

    order = -35  # after DistributedCallback (-40): the DDP wrapper is what gets compiled

    def __init__(self, mode: str | None = None, batch_norm: bool = True) -> None:
        self.mode, self.batch_norm = mode, batch_norm
        self._contexts = ExitStack()  # what a fit changes (cache setting, batch norm), undone
        self._swap: tuple[nn.Module, Any] | None = None  # (plain, compiled) during a fit

    def before_fit(self) -> None:
        learn = self.learn
        if os.environ.get("ATEN_CPU_CAPABILITY") and not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
            import torch._inductor.config as inductor_config  # (about 1 s: only when needed)

            # its keys do not see the capability
            self._contexts.enter_context(inductor_config.patch(fx_graph_cache=False))
        if self.batch_norm and learn.device.type == "cpu":  # (a CPU code-generation fix)
            self._contexts.enter_context(batch_norm_for_compile(learn.model))
        compiled = torch.compile(learn.forward_model, mode=self.mode)
        self._swap = (learn.forward_model, compiled)
        learn.forward_model = compiled

    def cleanup_fit(self) -> None:
        self._contexts.close()
        if self._swap is not None:
            plain, compiled = self._swap
            if self.learn.forward_model is compiled:  # (DDP's cleanup may have reset it first)
                self.learn.forward_model = plain
            self._swap = None
