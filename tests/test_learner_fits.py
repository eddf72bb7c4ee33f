"""State across several fits of one Learner: what one fit, or an LR sweep, leaves behind must
not change the next (fine_tune fits twice; lr_find runs a fit of its own)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from reslab.training import (
    ChannelsLast,
    EarlyStopping,
    GradientAccumulation,
    MixedPrecision,
    lr_find,
)
from test_learner import batches, learner, toy_data, toy_net


def _same_weights(a, b) -> None:
    for key, value in b.model.state_dict().items():
        torch.testing.assert_close(a.model.state_dict()[key], value, rtol=0, atol=0)


def test_callbacks_given_to_one_fit_leave_no_hooks_behind():
    # fit(cbs=[MixedPrecision("fp16"), ChannelsLast()]) installs autocast, a scaled optimizer
    # step and an input transform; the next plain fit must train exactly as a fresh Learner
    # from the same weights and optimizer state does (a left-behind scaler step would unscale
    # gradients that were never scaled, and autocast would keep computing in fp16).
    x, y = toy_data(64)
    a = learner(toy_net(), batches(x, y, 8), lr=0.05)
    a.fit(1, cbs=[MixedPrecision("fp16"), ChannelsLast()])
    assert a.input_transforms == []
    start = copy.deepcopy(a.model.state_dict()), copy.deepcopy(a.opt.state_dict())
    a.fit(1)
    b = learner(toy_net(), batches(x, y, 8), lr=0.05)
    b.model.to(memory_format=torch.channels_last)  # as ChannelsLast left a's weights
    b.model.load_state_dict(start[0])
    b.ensure_opt().load_state_dict(start[1])
    b.fit(1)
    assert a.pred.dtype == torch.float32
    _same_weights(a, b)


def test_lr_find_leaves_no_accumulated_gradient_behind():
    # 3 sweep batches with accumulation over 2: the sweep stops inside a group; its gradient
    # must not flow into the next fit's first step.
    x, y = toy_data(64)
    a = learner(toy_net(), batches(x, y, 8), lr=0.05, cbs=[GradientAccumulation(2)])
    lr_find(a, num_it=3)
    a.fit(1)
    b = learner(toy_net(), batches(x, y, 8), lr=0.05, cbs=[GradientAccumulation(2)])
    b.fit(1)
    _same_weights(a, b)


def test_lr_find_leaves_the_loss_scale_and_early_stopping_as_they_were():
    # A loss this large overflows fp16 gradients at the initial scale, so the sweep's steps
    # lower it; the sweep spans 3 epochs, which never validate.
    x, y = toy_data(64)

    def make():
        stop = EarlyStopping("valid_loss", patience=2)
        cbs = [MixedPrecision("fp16"), stop]
        loss = lambda pred, target: 3e4 * F.cross_entropy(pred, target)  # noqa: E731
        return learner(toy_net(), batches(x, y, 8), batches(x, y, 32), lr=1e-6, loss_func=loss,
                       cbs=cbs), stop  # fmt: skip

    a, stop = make()
    stop.best, stop.wait = -1.5, 1
    result = lr_find(a, start_lr=1e-7, end_lr=1e-3, num_it=20)
    assert len(result.lrs) == 20 and (stop.best, stop.wait) == (-1.5, 1)
    assert a.mixed_precision.scaler.get_scale() == 2.0**16
    a.fit(1)
    b, _ = make()
    b.fit(1)
    assert a.mixed_precision.scaler.get_scale() == b.mixed_precision.scaler.get_scale() < 2**16
    _same_weights(a, b)


def test_a_short_last_accumulation_group_steps_with_its_own_mean_gradient():
    # 4 batches, groups of 3: the first step takes the mean gradient of batches 1-3, the
    # second the gradient of batch 4 alone (plain SGD, as a hand-written loop computes it).
    x, y = toy_data(32)
    model, ref = toy_net(), toy_net()
    acc = learner(model, batches(x, y, 8), lr=0.1, wd=0.0, momentum=0.0,
                  cbs=[GradientAccumulation(3)])  # fmt: skip
    acc.fit(1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for group in (batches(x, y, 8)[:3], batches(x, y, 8)[3:]):
        opt.zero_grad()
        for xb, yb in group:
            (F.cross_entropy(ref(xb), yb) / len(group)).backward()
        opt.step()
    assert acc.step == 2
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_early_stopping_starts_afresh_in_every_fit():
    # lr 0: the validation loss never improves after the first epoch; patience 2 stops each
    # fit after 3 epochs, the second one too (not after 1, with the first fit's count).
    x, y = toy_data(32)
    stop = EarlyStopping("valid_loss", patience=2)
    learn = learner(toy_net(), batches(x, y, 8), batches(x, y, 16), lr=0.0, cbs=[stop])
    epochs = []
    for _ in range(2):
        learn.fit(5)
        epochs.append(len(learn.recorder.history))
    assert epochs == [3, 6]


def test_fit_after_a_one_cycle_fit_uses_the_learners_momentum():
    # One-cycle ends at moms[0] = 0.95; a constant-LR fit after it runs at learn.momentum.
    x, y = toy_data(32)
    learn = learner(toy_net(), batches(x, y, 8), lr=0.05, momentum=0.9)
    learn.fit_one_cycle(1)
    assert learn.opt.param_groups[0]["momentum"] == 0.95
    learn.fit(1)
    assert learn.opt.param_groups[0]["momentum"] == 0.9
