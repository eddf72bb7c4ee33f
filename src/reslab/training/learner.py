"""The Learner: a small training loop whose features all live in callbacks."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reslab.training.callback import (
    PASS_THROUGH,
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    CancelStepException,
    handler_table,
    name_callback_in,
)
from reslab.training.checkpoint import resume_learner, save_learner, set_rng_state
from reslab.training.distributed import DistributedCallback, all_reduce_sum, dist_info
from reslab.training.metrics import Metric, get_metric
from reslab.training.optim import ParamGroupFn, create_optimizer
from reslab.training.optim import param_groups as weight_decay_groups
from reslab.training.progress import ProgressCallback
from reslab.training.recorder import Recorder
from reslab.training.schedule import OneCycleSchedule
from reslab.training.stopping import TerminateOnNaN

__all__ = ["Learner"]


class Learner:
    """Train, validate and predict with a model; callbacks add every feature.

    Args:
        model: the network (moved to ``device``).
        train_dl: training batches ``(x, y)``; reslab loaders also offer ``set_epoch`` and
            ``batches(start)`` for exact resumes.
        valid_dl: validation batches (or ``None``).
        loss_func: training loss ``loss_func(pred, y)`` (default cross-entropy).
        metrics: names (``"accuracy"``, ``"top5"``) or :class:`Metric` objects.
        opt: ``"sgd"`` (momentum, Nesterov) or ``"adamw"``; norms and biases get no weight decay.
        lr: learning rate when ``fit`` gets none.
        param_groups: ``fn(model, wd) -> list of parameter groups`` for the optimizer; a
            group's ``"lr_scale"`` multiplies every learning rate set on it (discriminative
            LRs, see :func:`reslab.transfer.discriminative_param_groups`). Default:
            :func:`~reslab.training.optim.param_groups` (no weight decay on norms and biases).
        wd: weight decay.
        momentum: SGD momentum (AdamW's beta1); one-cycle cycles it.
        cbs: extra callbacks.
        device: where to train (default: the model's device).
        class_names: label names, stored in checkpoints.
        valid_loss_func: validation loss (default: plain cross-entropy when ``loss_func`` is
            a ``CrossEntropyLoss`` — so label smoothing does not inflate it — else ``loss_func``).
        progress: tqdm bars for epochs and batches (main process only).

    The Learner always has a :class:`Recorder` (``learn.recorder``) and a
    :class:`TerminateOnNaN`; it computes ``learn.batch_loss`` (the batch loss, averaged over
    processes, a device tensor) itself, before ``after_loss``. Nothing is read back to the host
    per batch: the Recorder reads the batch values once per epoch (see its docs).
    """

    def __init__(
        self,
        model: nn.Module,
        train_dl: Iterable | None,
        valid_dl: Iterable | None = None,
        *,
        loss_func: Callable[[Tensor, Tensor], Tensor] | None = None,
        metrics: Sequence[str | Metric] = ("accuracy",),
        opt: str = "sgd",
        lr: float = 0.1,
        wd: float = 5e-4,
        momentum: float = 0.9,
        param_groups: ParamGroupFn | None = None,
        cbs: Sequence[Callback] = (),
        device: str | torch.device | None = None,
        class_names: Sequence[str] | None = None,
        valid_loss_func: Callable[[Tensor, Tensor], Tensor] | None = None,
        progress: bool = True,
    ) -> None:
        first = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0))
        self.device = torch.device(device) if device else first.device
        self.model = model.to(self.device)
        self.forward_model: nn.Module = self.model  # a DDP wrapper replaces this under torchrun
        self.train_dl, self.valid_dl = train_dl, valid_dl
        self.loss_func = loss_func or nn.CrossEntropyLoss()
        if valid_loss_func is None:
            is_ce = isinstance(self.loss_func, nn.CrossEntropyLoss)
            valid_loss_func = nn.CrossEntropyLoss() if is_ce else self.loss_func
        self.valid_loss_func = valid_loss_func
        self.metrics = [get_metric(m) if isinstance(m, str) else m for m in metrics]
        self.opt_name, self.lr, self.wd, self.momentum = opt, lr, wd, momentum
        self.param_groups: ParamGroupFn = param_groups or weight_decay_groups
        self.opt: torch.optim.Optimizer | None = None
        self._opt_key: tuple = ()
        self.class_names = list(class_names) if class_names else None
        self.rank, self.world_size = dist_info()
        self.is_main = self.rank == 0
        # Hooks the precision/channels-last callbacks replace.
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
        self.input_transforms: list[Callable[[Tensor], Tensor]] = []
        self.opt_step: Callable[[], Any] = lambda: self._optimizer().step()
        self.epoch = self.iter = self.step = self.train_iter = 0  # progress counters
        self.n_epoch, self.n_iter, self.start_epoch, self.start_iter = 1, 0, 0, 0
        # Epochs of this Learner's earlier fits: the data order and the history go on from
        # there (fine_tune's second fit must not replay the first one's epoch 0).
        self.epochs_done = 0
        self.training = self.grads_pending = False
        self.xb: Tensor | None = None  # the batch in flight: inputs, targets, predictions,
        self.yb = self.pred = self.loss = self.loss_grad = self.xb  # loss, backward()'s tensor
        self.batch_loss: Tensor | None = None
        self.valid_results: dict[str, float] = {}
        self.resume_rng: dict | None = None
        self.last_checkpoint: Path | None = None
        self.cbs: list[Callback] = []
        self._handlers: dict[str, tuple[Callback, ...]] = {}  # event -> callbacks handling it
        self.recorder = Recorder()
        defaults: list[Callback] = [TerminateOnNaN(), self.recorder]
        defaults += [ProgressCallback()] if progress else []
        defaults += [DistributedCallback()] if self.world_size > 1 else []
        self.add_cbs([*defaults, *cbs])

    # ------------------------------------------------------------------ callbacks
    def add_cbs(self, cbs: Iterable[Callback]) -> Learner:
        for cb in cbs:
            cb.learn = self
            self.cbs.append(cb)
            self._run(cb, "attach")
            attr = cb.attr_name
            if not hasattr(self, attr) or isinstance(getattr(self, attr), Callback):
                setattr(self, attr, cb)
        self.cbs.sort(key=lambda c: c.order)
        self._handlers = handler_table(self.cbs)
        return self

    def remove_cbs(self, cbs: Iterable[Callback]) -> Learner:
        for cb in cbs:
            if cb in self.cbs:
                self._run(cb, "detach")
                self.cbs.remove(cb)
                if getattr(self, cb.attr_name, None) is cb:
                    delattr(self, cb.attr_name)
        self._handlers = handler_table(self.cbs)
        return self

    def __call__(self, event: str) -> bool:
        """Fire ``event`` on the callbacks that handle it; True if one returned True."""
        results = [self._run(cb, event) for cb in self._handlers.get(event, ())]
        return any(r is True for r in results)

    @staticmethod
    def _run(cb: Callback, event: str) -> Any:
        try:
            return getattr(cb, event)()
        except PASS_THROUGH:
            raise
        except Exception as err:
            name_callback_in(err, cb.name, event)
            raise

    # ------------------------------------------------------------------ optimizer
    def _opt_state_key(self) -> tuple:
        trainable = tuple(id(p) for p in self.model.parameters() if p.requires_grad)
        return trainable, self.param_groups

    def create_opt(self) -> torch.optim.Optimizer:
        """(Re)build the optimizer over the parameters that currently require grad."""
        groups = self.param_groups(self.model, self.wd)
        self.opt = create_optimizer(
            groups, self.opt_name, lr=self.lr, wd=self.wd, momentum=self.momentum
        )
        self.set_hyper("lr", self.lr)
        self._opt_key = self._opt_state_key()
        return self.opt

    def ensure_opt(self) -> torch.optim.Optimizer:
        """The optimizer, rebuilt when parameters were frozen or unfrozen, or the parameter
        groups replaced, since it was made (fine-tuning)."""
        if self.opt is None or self._opt_key != self._opt_state_key():
            return self.create_opt()
        return self.opt

    def _optimizer(self) -> torch.optim.Optimizer:
        if self.opt is None:
            raise RuntimeError("the Learner has no optimizer yet (fit or create_opt makes it)")
        return self.opt

    def _train_loader(self) -> Sized:
        if not isinstance(self.train_dl, Sized):  # (None too: a Learner built for inference)
            raise TypeError("fitting needs a training loader with a len() (learn.train_dl)")
        return self.train_dl

    def set_hyper(self, name: str, value: float) -> None:
        """Set ``lr`` (times each group's ``lr_scale``) or ``momentum`` (AdamW: beta1) on every
        parameter group."""
        for group in self._optimizer().param_groups:
            if name == "momentum" and "betas" in group:
                group["betas"] = (value, group["betas"][1])
            elif name == "lr":
                group["lr"] = value * group.get("lr_scale", 1.0)
            else:
                group[name] = value

    # ------------------------------------------------------------------ fitting
    def fit(self, n_epoch: int, lr: float | None = None, cbs: Sequence[Callback] = ()) -> None:
        """Train ``n_epoch`` epochs at a constant learning rate."""
        if lr is not None:
            self.lr = lr
        self.ensure_opt()
        self.set_hyper("lr", self.lr)
        self.set_hyper("momentum", self.momentum)  # a one-cycle fit before left its last value
        self.run_fit(n_epoch, cbs)

    def fit_one_cycle(
        self,
        n_epoch: int,
        max_lr: float | None = None,
        *,
        div: float = 25.0,
        div_final: float = 1e4,
        pct_start: float = 0.25,
        moms: tuple[float, float] = (0.95, 0.85),
        cbs: Sequence[Callback] = (),
    ) -> None:
        """Train with the one-cycle policy: LR warms up from ``max_lr/div`` to ``max_lr`` over
        ``pct_start`` of training, then anneals (cosine) to ``max_lr/(div*div_final)``;
        momentum moves inversely between ``moms[0]`` and ``moms[1]``."""
        if max_lr is not None:
            self.lr = max_lr
        self.ensure_opt()
        sched = OneCycleSchedule(
            self.lr, div=div, div_final=div_final, pct_start=pct_start, moms=moms
        )
        self.run_fit(n_epoch, [sched, *cbs])

    def run_fit(self, n_epoch: int, cbs: Sequence[Callback] = ()) -> None:
        """The training loop itself, with ``cbs`` added for this fit only; the LR is whatever
        the optimizer and the callbacks set (``fit``/``fit_one_cycle`` set it up)."""
        self.n_epoch = n_epoch
        self.n_iter = len(self._train_loader())
        self.add_cbs(cbs)
        begun = self.start_epoch  # a resumed fit's earlier epochs count as done
        try:
            try:
                self("before_fit")
                for epoch in range(self.start_epoch, n_epoch):
                    self.epoch, begun = epoch, epoch + 1
                    self.valid_results = {}
                    try:
                        self("before_epoch")
                        self._train_epoch()
                        self._validate_epoch()
                    except CancelEpochException:
                        pass
                    self("after_epoch")
            except CancelFitException:
                pass
            self("after_fit")
        finally:
            for cb in self.cbs:
                self._run(cb, "cleanup_fit")
            self.remove_cbs(cbs)
            if self.grads_pending:  # a fit stopped inside an accumulation group
                self._optimizer().zero_grad(set_to_none=True)
                self.grads_pending = False
            self.start_epoch = self.start_iter = 0
            self.training = False  # (a fit stopped by an exception too)
            self.epochs_done += begun

    def _batches(self, dl, start: int):
        if hasattr(dl, "set_epoch"):
            dl.set_epoch(self.epochs_done + self.epoch)
        elif hasattr(getattr(dl, "sampler", None), "set_epoch"):
            dl.sampler.set_epoch(self.epochs_done + self.epoch)
        if hasattr(dl, "batches"):
            return dl.batches(start)
        return itertools.islice(iter(dl), start, None)

    def _train_epoch(self) -> None:
        self.training = True
        self.model.train()
        train_dl = self._train_loader()
        self.n_iter = len(train_dl)
        start = self.start_iter if self.epoch == self.start_epoch else 0
        self("before_train")
        batches = self._batches(train_dl, start)
        if self.resume_rng is not None:
            set_rng_state(self.resume_rng)  # exactly where the interrupted run stood
            self.resume_rng = None
        for i, (xb, yb) in enumerate(batches, start):
            self.iter = i
            self.train_iter = self.epoch * self.n_iter + i
            self.xb, self.yb = self._prepare(xb), yb.to(self.device, non_blocking=True)
            self._one_batch()
        self("after_train")
        self.training = False

    def _prepare(self, xb: Tensor) -> Tensor:
        xb = xb.to(self.device, non_blocking=True)
        for t in self.input_transforms:
            xb = t(xb)
        return xb

    def _one_batch(self) -> None:
        try:
            self("before_batch")
            with self.autocast():
                if not self("compute_loss"):
                    assert self.yb is not None  # set with xb by _train_epoch
                    self.pred = self.forward_model(self.xb)
                    self.loss = self.loss_func(self.pred, self.yb)
            if self.loss is None:
                raise RuntimeError("compute_loss returned True but set no learn.loss")
            self.loss_grad = self.loss
            self.batch_loss = self._mean_over_processes(self.loss)
            self("after_loss")
            self.loss_grad.backward()
            self.grads_pending = True
            try:
                self("before_step")
                self.opt_step()
                self.step += 1
                self("after_step")
                self._optimizer().zero_grad(set_to_none=True)
                self.grads_pending = False
            except CancelStepException:
                pass
        except CancelBatchException:
            pass
        self("after_batch")

    def _mean_over_processes(self, loss: Tensor) -> Tensor:
        loss = loss.detach().float()  # stays on the device: nothing is read per batch
        return all_reduce_sum(loss.clone()) / self.world_size if self.world_size > 1 else loss

    def _validate_epoch(self) -> None:
        if self.valid_dl is None:
            return
        self("before_validate")
        self.valid_results = self.validate()
        self("after_validate")

    # ------------------------------------------------------------------ inference
    def validate(self, dl: Iterable | None = None) -> dict[str, float]:
        """Loss and metrics over ``dl`` (default: the validation loader), all processes pooled."""
        dl = self.valid_dl if dl is None else dl
        if dl is None:
            raise ValueError("validate: no data (pass dl, or give the Learner a valid_dl)")
        was_training = self.model.training
        self.model.eval()
        for m in self.metrics:
            m.reset()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), self.autocast():
            for xb, yb in dl.batches(0) if hasattr(dl, "batches") else dl:
                xb, yb = self._prepare(xb), yb.to(self.device)
                pred = self.model(xb).float()
                loss_sum += self.valid_loss_func(pred, yb).double() * len(yb)
                count += len(yb)
                for m in self.metrics:
                    m.update(pred, yb)
        self.model.train(was_training)
        totals = all_reduce_sum(torch.stack([loss_sum, count]))
        results = {"valid_loss": float(totals[0] / totals[1].clamp_min(1))}
        for m in self.metrics:
            m.all_reduce()
            results[m.name] = m.compute()
        return results

    def predict(self, data: Tensor | Iterable, batch_size: int = 256) -> tuple[Tensor, Tensor]:
        """Class probabilities and predicted labels for images (0–1 floats) or a loader."""
        self.model.eval()
        batches = data.split(batch_size) if isinstance(data, Tensor) else (b[0] for b in data)
        probs = []
        with torch.no_grad(), self.autocast():
            for xb in batches:
                probs.append(self.model(self._prepare(xb)).float().softmax(-1).cpu())
        p = torch.cat(probs)
        return p, p.argmax(-1)

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, *, with_state: bool = False, **extra: Any) -> Path:
        """Save the model (safetensors + JSON config + class names) to ``path``; with
        ``with_state`` also the optimizer/scaler/EMA/RNG/callback states, for :meth:`resume`."""
        return save_learner(self, Path(path), with_state=with_state, **extra)

    def resume(self, path: str | Path) -> Learner:
        """Load a checkpoint written during training (a run folder or its checkpoint file):
        weights, optimizer, scaler, EMA, callback and RNG states, and the epoch/batch
        position. The next ``fit``/``fit_one_cycle`` call (with the same arguments) continues
        where the checkpoint left off."""
        resume_learner(self, Path(path))
        return self
