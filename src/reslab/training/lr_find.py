"""The learning-rate finder: an exponential LR sweep over a few batches, smoothed loss,
a suggested learning rate. Model and optimizer are restored afterwards."""

from __future__ import annotations

import copy
import math
from collections.abc import Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reslab.training.callback import Callback, CancelEpochException, CancelFitException
from reslab.training.checkpoint import SaveCheckpoint, get_rng_state, set_rng_state
from reslab.training.ema import EMA
from reslab.training.loggers import CSVLogger, TensorBoardCallback
from reslab.training.stopping import EarlyStopping, TerminateOnNaN

if TYPE_CHECKING:
    from reslab.training.learner import Learner

__all__ = ["LRFinder", "LRFindResult", "lr_find", "suggest_lr"]

# Loggers, checkpoints, averages and stopping rules must not see the sweep (it never
# validates, and its diverging losses are not training).
SWEEP_HIDDEN = (SaveCheckpoint, EMA, CSVLogger, TensorBoardCallback, EarlyStopping)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed (debiased exponential moving average)
    raw_losses: list[float]
    suggestion: float

    def to_dict(self) -> dict:
        return {
            "lrs": self.lrs,
            "losses": self.losses,
            "raw_losses": self.raw_losses,
            "suggestion": self.suggestion,
        }


def suggest_lr(lrs: list[float], losses: list[float], method: str = "valley") -> float:
    """The learning rate to train with, read off an LR sweep's smoothed losses.

    ``"valley"`` (the default, as fastai's): the longest stretch over which the loss keeps
    falling (its longest decreasing subsequence), and the LR two thirds of the way along it —
    far enough down the slope to learn fast, well before the divergence. ``"steepest"``: the LR
    where the loss falls fastest against log LR, searched before the loss minimum; one noisy
    dip at the start of the sweep can win there, which is why it is not the default.
    """
    if len(lrs) < 4:
        return lrs[len(lrs) // 2]
    if method == "steepest":
        return lrs[_steepest(lrs, losses)]
    if method != "valley":
        raise ValueError(f"unknown suggestion method {method!r}; expected valley or steepest")
    start, end = _longest_descent(losses)
    return lrs[start + (end - start) * 2 // 3]


def _longest_descent(losses: list[float]) -> tuple[int, int]:
    """First and last index of the longest strictly decreasing subsequence of ``losses``."""
    length, previous = [1] * len(losses), [-1] * len(losses)
    for i, loss in enumerate(losses):
        for j in range(i):
            if losses[j] > loss and length[j] + 1 > length[i]:
                length[i], previous[i] = length[j] + 1, j
    end = max(range(len(losses)), key=length.__getitem__)
    start = end
    while previous[start] != -1:
        start = previous[start]
    return start, end


def _steepest(lrs: list[float], losses: list[float]) -> int:
    end = max(min(range(len(losses)), key=losses.__getitem__), 3)  # the loss minimum
    best_i, best_slope = 1, math.inf
    for i in range(1, end):
        slope = (losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        if slope < best_slope:
            best_i, best_slope = i, slope
    return best_i


class LRFinder(Callback):
    """Raise the LR exponentially from ``start_lr`` to ``end_lr`` over ``num_it`` batches;
    stop early once the smoothed loss exceeds ``stop_div`` times its best value."""

    order = -5

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        beta: float = 0.98,
        stop_div: float = 4.0,
    ) -> None:
        self.start_lr, self.end_lr, self.num_it = start_lr, end_lr, num_it
        self.beta, self.stop_div = beta, stop_div
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.raw: list[float] = []
        self._avg, self._best, self._i = 0.0, math.inf, 0

    def before_batch(self) -> None:
        if not self.learn.training:
            return
        pos = self._i / max(1, self.num_it - 1)
        lr = self.start_lr * (self.end_lr / self.start_lr) ** pos
        self.learn.set_hyper("lr", lr)

    def after_batch(self) -> None:
        learn = self.learn
        if not learn.training or learn.batch_loss is None:
            return
        loss = float(learn.batch_loss)
        self._i += 1
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta**self._i)
        self.lrs.append(float(learn.opt.param_groups[0]["lr"]))
        self.raw.append(loss)
        self.losses.append(smooth)
        self._best = min(self._best, smooth)
        if self._i >= self.num_it or smooth > self.stop_div * self._best or math.isnan(smooth):
            raise CancelFitException

    def before_validate(self) -> None:
        raise CancelEpochException  # the sweep never validates; it goes on to the next epoch


def lr_find(
    learn: Learner, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100
) -> LRFindResult:
    """Run the sweep on ``learn`` and put model, optimizer and callbacks back as they were."""
    opt = learn.ensure_opt()
    model_state = copy.deepcopy(learn.model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    rng = get_rng_state()
    counters = (learn.step, learn.epoch, learn.iter, learn.train_iter, learn.epochs_done)
    # Only the sweep runs: loggers, checkpoints and averages must not see it.
    hidden = [cb for cb in learn.cbs if isinstance(cb, SWEEP_HIDDEN)]
    # The others run during the sweep; their state (recorder, loss scale, accumulation count)
    # is put back afterwards, so the next fit goes on as if the sweep had never run.
    states = [(cb, copy.deepcopy(cb.state_dict())) for cb in learn.cbs if cb not in hidden]
    learn.remove_cbs(hidden)
    nan_checks = [cb for cb in learn.cbs if isinstance(cb, TerminateOnNaN)]
    for check in nan_checks:
        check.enabled = False
    finder = LRFinder(start_lr, end_lr, num_it)
    if not isinstance(learn.train_dl, Sized):  # (also None: no training data)
        raise TypeError("lr_find needs a Learner whose training loader has a len()")
    n_epoch = max(1, math.ceil(num_it / max(1, len(learn.train_dl))))
    try:
        learn.run_fit(n_epoch, [finder])
    finally:
        learn.model.load_state_dict(model_state)
        if learn.opt is not None:  # (made above; a fit keeps it)
            learn.opt.load_state_dict(opt_state)
        for cb, state in states:
            cb.load_state_dict(state)
        learn.add_cbs(hidden)
        for check in nan_checks:
            check.enabled = True
        learn.step, learn.epoch, learn.iter, learn.train_iter, learn.epochs_done = counters
        set_rng_state(rng)
    if not finder.lrs:
        raise ValueError("lr_find: no training batch ran")
    return LRFindResult(
        finder.lrs, finder.losses, finder.raw, suggest_lr(finder.lrs, finder.losses)
    )
