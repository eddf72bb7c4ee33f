"""torchrun support: process-group setup, DDP as a callback, pooled reductions, SyncBN.

``torchrun --nproc_per_node=N -m reslab train …`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; :func:`init_distributed` reads them (NCCL on CUDA,
gloo on CPU). Each process gets ``1/N`` of every global batch from the reslab loaders, DDP
averages gradients, and only rank 0 draws bars, writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reslab.training.callback import Callback

__all__ = [
    "DistContext",
    "DistributedCallback",
    "all_reduce_sum",
    "broadcast_buffers",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "dist_info",
    "init_distributed",
]


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torchrun."""
    if not _active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def init_distributed(device: str | None = None, backend: str | None = None) -> DistContext:
    """Join the process group torchrun describes (no-op for a single process).

    Args:
        device: ``"cuda"`` or ``"cpu"`` (default: CUDA when available).
        backend: ``"nccl"`` or ``"gloo"`` (default: ``$RESLAB_DIST_BACKEND``, else NCCL for
            CUDA and gloo for CPU; gloo also runs CUDA tensors, e.g. several processes
            sharing one GPU, which NCCL refuses).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible to PyTorch here")
    # More processes than GPUs (e.g. a test on a one-GPU machine) share them round-robin;
    # only gloo allows that, NCCL refuses two ranks on one device.
    dev = torch.device(f"cuda:{local % max(torch.cuda.device_count(), 1)}" if use_cuda else "cpu")
    if world > 1 and not _active():
        import torch.distributed as dist

        backend = backend or os.environ.get("RESLAB_DIST_BACKEND")
        backend = backend or ("nccl" if use_cuda else "gloo")
        gpus = torch.cuda.device_count() if use_cuda else 0
        if use_cuda and backend == "nccl" and local >= gpus:
            raise ValueError(
                f"local rank {local} but only {gpus} GPU(s): NCCL needs one GPU per process; "
                f"use --nproc_per_node={gpus}, or RESLAB_DIST_BACKEND=gloo to share GPUs"
            )
        if use_cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, local, dev)


def cleanup_distributed() -> None:
    """End the process group. Call it once training is over: objects still holding the group
    (a DDP wrapper) are collected first, so gloo's threads stop before the interpreter does."""
    if _active():
        import gc

        import torch.distributed as dist

        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all processes (returns ``t`` itself when not distributed)."""
    if not _active():
        return t
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics); nothing when not
    distributed. Each process updates its statistics from its own shard of the batch."""
    if not _active():
        return
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf, 0)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace BatchNorm layers by SyncBatchNorm (statistics over the global batch).

    PyTorch implements SyncBatchNorm for CUDA only; on CPU this raises a clear error.
    """
    if device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on CPU")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


class DistributedCallback(Callback):
    """Train through :class:`~torch.nn.parallel.DistributedDataParallel`.

    ``learn.model`` stays the plain module (checkpoints, validation, ``model.fc`` access);
    ``learn.forward_model`` is the DDP wrapper that the training forward pass goes through,
    so its gradient all-reduce runs during ``backward``.

    The wrapper lives for one fit. DDP fixes at construction which parameters it all-reduces
    (those requiring grad then), so the second fit of ``fine_tune``, after ``unfreeze``, needs
    a new one; and a wrapper kept past training would hold the process group alive past
    ``cleanup_distributed`` (gloo then aborts the process at exit now and then).
    """

    order = -40

    def before_fit(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        learn = self.learn
        ids = [learn.device.index] if learn.device.type == "cuda" else None
        learn.forward_model = DDP(learn.model, device_ids=ids)

    def cleanup_fit(self) -> None:
        self.learn.forward_model = self.learn.model

    def before_validate(self) -> None:
        # Each process updated its BN running statistics from its own shard after DDP's last
        # buffer broadcast; validate every shard with rank 0's (the ones checkpoints keep).
        broadcast_buffers(self.learn.model)
