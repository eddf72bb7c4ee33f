"""Training checkpoints that lose nothing, and the callback that writes them.

A run folder holds two files per checkpoint (names in :mod:`reslab.runs.names`):

* the checkpoint (``checkpoint.safetensors``) — the model (a reslab checkpoint: weights + JSON
  config, enough to rebuild it alone) plus the position (epoch, batch, step), class names and
  the name of the state file that belongs to it;
* its state file (``checkpoint.train_state-eEEEE-bBBBBBB.pt``) — optimizer, scaler, EMA,
  callback and RNG states: tensors and plain containers only, read back with
  ``torch.load(weights_only=True)``.

Commit order makes the pair crash-safe: the new state file is written first (atomically, under
a new name), then the model file is atomically replaced — that rename is the commit — and only
then are older state files deleted. A kill at any moment leaves a consistent previous pair.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reslab.files import atomic_write
from reslab.models import ResNet
from reslab.runs import claim, names
from reslab.training.callback import Callback, TrainingDiverged
from reslab.weights import (
    WeightsError,
    read_checkpoint_config,
    read_state_dict,
    save_checkpoint,
    write_safetensors,
)
from reslab.weights.files import read_safetensors_metadata, refusal

__all__ = [
    "add_checkpoint_meta",
    "SaveCheckpoint",
    "get_rng_state",
    "read_checkpoint_meta",
    "resume_learner",
    "save_learner",
    "set_rng_state",
]

STATE_KEY = "reslab_train"


def get_rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from: torch (CPU, CUDA), Python, NumPy."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the global RandomState is MT19937: a legacy tuple
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _callback_states(learn) -> dict[str, Any]:
    states: dict[str, Any] = {}
    for cb in learn.cbs:
        sd = cb.state_dict()
        if sd:
            key = cb.name
            while key in states:
                key += "+"
            states[key] = sd
    return states


def _gather_rng(learn) -> list[dict[str, Any]]:
    rng = get_rng_state()
    if learn.world_size == 1:
        return [rng]
    import torch.distributed as dist

    out: list[Any] = [None] * learn.world_size
    dist.all_gather_object(out, rng)
    return out


def save_learner(
    learn,
    path: Path,
    *,
    with_state: bool = True,
    position: tuple[int, int] | None = None,
    **extra: Any,
) -> Path:
    """Write the model checkpoint at ``path`` and, with ``with_state``, its state file.

    ``position`` is ``(epoch, batch)`` where training resumes (default: the next epoch).
    Every process must call this under torchrun (RNG states are gathered); rank 0 writes.
    """
    path = Path(path)
    finite = [torch.isfinite(p).all() for p in learn.model.parameters()]
    if finite and not bool(torch.stack(finite).all()):  # one read from the device
        raise TrainingDiverged(
            f"weights contain NaN/inf at epoch {learn.epoch + 1}: not overwriting {path}"
        )
    epoch, batch = position if position is not None else (learn.epoch + 1, 0)
    meta: dict[str, Any] = {
        "epoch": epoch,
        "batch": batch,
        "step": learn.step,
        "class_names": learn.class_names,
        **extra,
    }
    payload = None
    if with_state:
        payload = {
            "opt": learn.opt.state_dict() if learn.opt is not None else None,
            "callbacks": _callback_states(learn),
            "rng": _gather_rng(learn),
            "meta": json.dumps(meta),
        }
    if not learn.is_main:
        return path
    if payload is not None:
        state_name = _state_name(path, epoch, batch)
        meta["state_file"] = state_name
        state_path = claim(path.parent / state_name)
        atomic_write(state_path, lambda tmp: torch.save(payload, tmp))
    _write_model(learn.model, claim(path), meta)
    if payload is not None:  # the commit happened: older state files are garbage now
        pattern = _state_name(path, 0, 0).split("-e", 1)[0] + "-*.pt"
        for old in path.parent.glob(pattern):
            if old.name != meta["state_file"]:
                old.unlink(missing_ok=True)
    return path


def _state_name(path: Path, epoch: int, batch: int) -> str:
    """The state file's name: the run folder's own, or for a checkpoint of another name
    (``Learner.save(path, with_state=True)``) the same pattern on its stem."""
    name = names.checkpoint_state_name(epoch, batch)
    if path.name == names.CHECKPOINT:
        return name
    return f"{path.stem}{name[len(Path(names.CHECKPOINT).stem) :]}"


def _write_model(model: torch.nn.Module, path: Path, meta: dict[str, Any]) -> None:
    if isinstance(model, ResNet):
        save_checkpoint(path, model, **meta)
        return
    # Any other nn.Module: plain safetensors with the training metadata in the header.
    write_safetensors(path, model.state_dict(), {STATE_KEY: json.dumps(meta)})


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The training metadata (position, class names, state file, caller's extras)."""
    header = read_safetensors_metadata(path)
    if STATE_KEY in header:
        return json.loads(header[STATE_KEY])
    return read_checkpoint_config(path).get("state", {})


def resume_learner(learn, path: Path) -> dict[str, Any]:
    """Load everything :func:`save_learner` wrote; return the checkpoint's metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / names.CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    meta = read_checkpoint_meta(path)
    state_file = meta.get("state_file")
    if not state_file:
        raise WeightsError(f"{path}: holds weights only (saved without training state)")
    state_path = path.parent / state_file
    if not state_path.is_file():
        raise WeightsError(f"{path}: its training state {state_file} is missing")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{state_path}: unreadable training state ({refusal(err)})") from None
    learn.model.load_state_dict(read_state_dict(path))
    if state["opt"] is not None:
        learn.ensure_opt()
        learn.opt.load_state_dict(state["opt"])
    by_name: dict[str, Any] = state["callbacks"]
    seen: dict[str, int] = {}
    for cb in learn.cbs:
        key = cb.name + "+" * seen.get(cb.name, 0)
        seen[cb.name] = seen.get(cb.name, 0) + 1
        if key in by_name:
            cb.load_state_dict(by_name[key])
    rngs = state["rng"]
    learn.resume_rng = rngs[learn.rank] if learn.rank < len(rngs) else rngs[0]
    learn.start_epoch, learn.start_iter = int(meta["epoch"]), int(meta["batch"])
    learn.epoch, learn.step = learn.start_epoch, int(meta["step"])
    if meta.get("class_names") and not learn.class_names:
        learn.class_names = list(meta["class_names"])
    learn.last_checkpoint = path
    return meta


def add_checkpoint_meta(learn: Any, **values: Any) -> None:  # a Learner (it imports this module)
    """Store ``values`` (JSON-able) in every checkpoint ``learn``'s :class:`SaveCheckpoint`
    writes from now on: what a resume needs that only this process knows (a suggested LR,
    which fit of a two-fit recipe is running)."""
    for cb in learn.cbs:
        if isinstance(cb, SaveCheckpoint):
            cb.extra.update(values)


class SaveCheckpoint(Callback):
    """Write ``folder/checkpoint.safetensors`` (+ state) after every epoch and, if asked,
    every ``every_n_steps`` batches mid-epoch.

    A mid-epoch save waits for a batch that ended with an optimizer step (no accumulated
    gradients pending), so nothing in flight is lost. ``extra`` (JSON-able) is stored with
    the position, e.g. the command line that started the run.
    """

    order = 90  # after the Recorder and EMA have updated

    def __init__(
        self,
        folder: str | Path,
        every_n_steps: int | None = None,
        every_epoch: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(folder) / names.CHECKPOINT
        self.every_n_steps = every_n_steps
        self.every_epoch = every_epoch
        self.extra = dict(extra or {})
        self._due = False

    def _save(self, position: tuple[int, int]) -> None:
        nan_check = getattr(self.learn, "terminate_on_nan", None)
        if nan_check is not None:
            nan_check.check()  # never checkpoint after a non-finite loss still on the device
        save_learner(self.learn, self.path, position=position, **self.extra)
        self.learn.last_checkpoint = self.path
        if self.learn.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or not self.every_n_steps:
            return
        if (learn.iter + 1) % self.every_n_steps == 0:
            self._due = True
        if self._due and not learn.grads_pending:
            self._save((learn.epoch, learn.iter + 1))
            self._due = False

    def after_epoch(self) -> None:
        self._due = False
        if self.every_epoch:
            self._save((self.learn.epoch + 1, 0))
