"""The batch plan every reslab loader follows: one shuffle per ``(seed, epoch)``, global batches
split across processes, the last partial batch kept or dropped.

Sharing it is what makes the loaders interchangeable: the in-memory, decoded-folder and
decode-every-epoch loaders visit the same samples in the same batches for the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from reslab.data.folder import mix_seeds

__all__ = ["batch_span", "epoch_order", "global_batches", "process_spans"]


def global_batches(n: int, batch: int, drop_last: bool) -> int:
    """How many global batches of ``batch`` samples ``n`` samples make."""
    full, rest = divmod(n, batch)
    return full + (1 if rest and not drop_last else 0)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> tuple[Tensor, torch.Generator]:
    """The epoch's sample order (one shuffle per ``(seed, epoch)``) and the generator after it."""
    g = torch.Generator().manual_seed(mix_seeds(seed, epoch))
    return (torch.randperm(n, generator=g) if shuffle else torch.arange(n)), g


def batch_span(b: int, global_batch: int, n: int, rank: int, world: int) -> tuple[int, int]:
    """``(first, last)``: process ``rank``'s share of global batch ``b`` is the epoch order's
    positions ``first:last`` (torch.tensor_split's sections of the global batch)."""
    lo = b * global_batch
    size = min(lo + global_batch, n) - lo
    base, extra = divmod(size, world)
    first = lo + rank * base + min(rank, extra)
    return first, first + base + (1 if rank < extra else 0)


def process_spans(
    start: int, batches: int, global_batch: int, n: int, rank: int, world: int
) -> Iterator[tuple[int, int]]:
    """``(first, last)`` of process ``rank``'s share of each global batch from ``start`` to
    ``batches``, skipping empty shares (an evaluation tail smaller than the process count)."""
    for b in range(start, batches):
        first, last = batch_span(b, global_batch, n, rank, world)
        if last > first:
            yield first, last
