"""The Learner's loop against hand-written torch loops and torch's own schedulers/optimizers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from reslab.training import (
    EVENTS,
    Callback,
    CancelFitException,
    EarlyStopping,
    Learner,
    OneCycleSchedule,
    StepSchedule,
    create_optimizer,
    one_cycle,
    param_groups,
    step_lr,
)


def toy_data(n=64, seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 6, 6, generator=g) * 0.3
    x[torch.arange(n), y % 3, y, :] += 2.0  # learnable: class marks a row in a channel
    return x, y


def batches(x, y, bs):
    return [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(x), bs)]


def toy_net(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4)]
    return nn.Sequential(*layers)


def learner(model, train, valid=None, **kw):
    kw.setdefault("progress", False)
    return Learner(model, train, valid, **kw)


# ------------------------------------------------------------------ loop vs plain torch
@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_fit_equals_a_plain_torch_loop(opt):
    x, y = toy_data()
    train = batches(x, y, 16)
    ref = toy_net()
    model = copy.deepcopy(ref)
    learn = learner(model, train, opt=opt, lr=0.05, wd=0.01)
    learn.fit(2)
    # Reference: torch optimizer, same groups built by hand (decay on weights only).
    decay = [p for p in ref.parameters() if p.ndim > 1]
    no_decay = [p for p in ref.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    if opt == "sgd":
        o = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
    else:
        o = torch.optim.AdamW(groups, lr=0.05, betas=(0.9, 0.999))
    for _ in range(2):
        for xb, yb in train:
            loss = nn.functional.cross_entropy(ref(xb), yb)
            o.zero_grad()
            loss.backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert learn.step == 8


def test_param_groups_skip_frozen_and_no_decay_on_norms():
    model = toy_net(bn=True)
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    plain = {id(p) for p in groups[1]["params"]}
    assert decayed == {id(model[5].weight)}
    assert plain == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[5].bias)}
    assert groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer(model, "lion")


def test_optimizer_rebuilt_after_unfreezing():
    x, y = toy_data(32)
    model = toy_net()
    for p in model[0].parameters():
        p.requires_grad_(False)
    learn = learner(model, batches(x, y, 16), lr=0.01)
    frozen = model[0].weight.clone()
    learn.fit(1)
    assert torch.equal(model[0].weight, frozen)  # a frozen backbone does not move
    for p in model[0].parameters():
        p.requires_grad_(True)
    learn.fit(1)
    assert not torch.equal(model[0].weight, frozen)


# ------------------------------------------------------------------ one-cycle
def test_one_cycle_matches_torch_onecyclelr():
    total, max_lr = 37, 0.4
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=max_lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=max_lr,
        total_steps=total,
        pct_start=0.25,
        div_factor=25,
        final_div_factor=1e4,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    for step in range(total):
        lr, mom = one_cycle(step, total, max_lr, pct_start=0.25)
        assert lr == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        assert mom == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-9)
        opt.step()
        if step < total - 1:
            sched.step()


def test_step_lr_matches_torch_multisteplr():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[82, 123], gamma=0.1)
    for epoch in range(164):
        assert step_lr(epoch, 0.1, (82, 123)) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def _lrs_under(schedule: StepSchedule, epochs: int = 4) -> list[float]:
    """The LR of every training batch of a fit under ``schedule`` (6 batches per epoch)."""
    x, y = toy_data(48)
    learn = learner(toy_net(), batches(x, y, 8))
    seen = []

    class Spy(Callback):
        order = 1

        def before_batch(self):
            if self.learn.training:
                seen.append(self.learn.opt.param_groups[0]["lr"])

    learn.fit(epochs, schedule.base_lr, cbs=[schedule, Spy()])
    return seen


def test_step_schedule_sets_lr_per_epoch():
    seen = _lrs_under(StepSchedule(0.2, (2, 3)))
    assert seen == pytest.approx([0.2] * 12 + [0.02] * 6 + [0.002] * 6)
    with pytest.raises(ValueError, match="increasing"):
        StepSchedule(0.1, (5, 2))


def test_step_schedule_warm_up_runs_at_a_tenth_then_the_full_lr():
    # He et al.'s ResNet-110: 0.01 first, then back to 0.1, then the usual steps.
    assert [step_lr(e, 0.1, (82, 123), warmup=1) for e in (0, 1, 81, 82, 123)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.001]
    )
    seen = _lrs_under(StepSchedule(0.2, (3,), warmup=1))
    assert seen == pytest.approx([0.02] * 6 + [0.2] * 12 + [0.02] * 6)
    with pytest.raises(ValueError, match="first milestone"):
        StepSchedule(0.1, (2, 5), warmup=2)


def test_fit_one_cycle_sets_lr_per_batch():
    x, y = toy_data(48)
    learn = learner(toy_net(), batches(x, y, 8))
    seen = []

    class Spy(Callback):
        order = 1  # after the schedule

        def before_batch(self):
            g = self.learn.opt.param_groups[0]
            seen.append((g["lr"], g["momentum"]))

    learn.fit_one_cycle(2, 0.2, cbs=[Spy()])
    # The reference: torch's OneCycleLR with the same phases, stepped once per batch.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.2, total_steps=12, pct_start=0.25, div_factor=25.0,
        final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95,
    )  # fmt: skip
    expected = []
    for _ in range(12):
        expected.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    assert [v for pair in seen for v in pair] == pytest.approx([v for p in expected for v in p])
    assert not any(isinstance(cb, (OneCycleSchedule, Spy)) for cb in learn.cbs)


# ------------------------------------------------------------------ events and overrides
def test_event_order():
    x, y = toy_data(16)
    log = []

    class Log(Callback):
        pass

    for ev in EVENTS:
        setattr(Log, ev, lambda self, ev=ev: log.append(ev))
    learn = learner(toy_net(), batches(x, y, 8), batches(x, y, 8), cbs=[Log()])
    learn.fit(1)
    batch = [
        "before_batch",
        "compute_loss",
        "after_loss",
        "before_step",
        "after_step",
        "after_batch",
    ]
    assert log == [
        "before_fit",
        "before_epoch",
        "before_train",
        *batch,
        *batch,
        "after_train",
        "before_validate",
        "after_validate",
        "after_epoch",
        "after_fit",
    ]


def test_compute_loss_override_and_validation_uses_model():
    x, y = toy_data(32)
    calls = []

    class Custom(Callback):
        def compute_loss(self):
            learn = self.learn
            emb = learn.model[:-1](learn.xb)  # embeddings, then a hand-made loss on fc.weight
            learn.pred = None
            learn.loss = (emb @ learn.model[-1].weight.T).logsumexp(-1).mean()
            calls.append(1)
            return True

    model = toy_net()
    learn = learner(model, batches(x, y, 16), batches(x, y, 16), cbs=[Custom()])
    before = model[-1].weight.clone()
    learn.fit(1, lr=0.1)
    assert len(calls) == 2 and learn.pred is None
    assert not torch.equal(before, model[-1].weight)
    # validation ran model(x) with the normal loss: compare to a direct computation
    with torch.no_grad():
        ref = nn.functional.cross_entropy(model.eval()(x), y).item()
    assert learn.recorder.history[0]["valid_loss"] == pytest.approx(ref, rel=1e-5)


def test_cancel_fit_and_early_stopping():
    x, y = toy_data(16)

    class StopAfterThree(Callback):
        def after_batch(self):
            if self.learn.step == 3:
                raise CancelFitException

    learn = learner(toy_net(), batches(x, y, 4), cbs=[StopAfterThree()])
    learn.fit(5)
    assert learn.step == 3

    learn = learner(
        toy_net(),
        batches(x, y, 8),
        batches(x, y, 8),
        cbs=[EarlyStopping("valid_loss", patience=1)],
        lr=1e-9,
    )
    learn.fit(10, lr=0.0)  # no progress at lr 0: stops after patience runs out
    assert len(learn.recorder.history) == 2


# ------------------------------------------------------------------ validate / predict
def test_validate_and_predict_match_direct_computation():
    x, y = toy_data(40)
    model = toy_net()
    learn = learner(model, None, batches(x, y, 16), metrics=("accuracy", "top2"))
    res = learn.validate()
    with torch.no_grad():
        logits = model.eval()(x)
    assert res["valid_loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, y).item(), rel=1e-6
    )
    assert res["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    top2 = (logits.topk(2, 1).indices == y[:, None]).any(1).float().mean().item()
    assert res["top2"] == pytest.approx(top2)
    probs, preds = learn.predict(x, batch_size=7)
    torch.testing.assert_close(probs, logits.softmax(-1))
    assert torch.equal(preds, logits.argmax(1))


def test_label_smoothing_loss_is_hand_formula():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 1, 2])
    eps = 0.1
    logp = logits.log_softmax(-1)
    hand = (-(1 - eps) * logp[torch.arange(5), y] - eps / 4 * logp.sum(-1)).mean()
    assert nn.CrossEntropyLoss(label_smoothing=eps)(logits, y) == pytest.approx(hand.item())
    learn = learner(toy_net(), None, loss_func=nn.CrossEntropyLoss(label_smoothing=eps))
    # validation reports plain cross-entropy, not the smoothed training loss
    assert learn.valid_loss_func.label_smoothing == 0.0


def test_history_rows():
    x, y = toy_data(32)
    learn = learner(toy_net(), batches(x, y, 8), batches(x, y, 8))
    learn.fit_one_cycle(2, 0.1)
    h = learn.recorder.history
    assert [r["epoch"] for r in h] == [1, 2]
    assert set(h[0]) >= {"train_loss", "valid_loss", "accuracy", "lr", "time", "samples_per_s"}
    assert len(learn.recorder.lrs) == 8 and math.isfinite(h[1]["train_loss"])
    assert h[0]["train_loss"] == pytest.approx(sum(learn.recorder.losses[:4]) / 4)


# ------------------------------------------------------------------ the callback protocol
def test_every_event_is_declared_on_the_base_class():
    from reslab.training import LIFECYCLE_EVENTS

    for event in (*EVENTS, *LIFECYCLE_EVENTS):
        assert callable(getattr(Callback, event)), event


def test_a_failing_callback_names_itself_and_the_event():
    x, y = toy_data(16)

    class Broken(Callback):
        def after_batch(self):
            if self.learn.step == 2:
                raise KeyError("no such column")

    learn = learner(toy_net(), batches(x, y, 4), cbs=[Broken()])
    with pytest.raises(KeyError, match="callback Broken failed in after_batch") as info:
        learn.fit(1)
    assert "no such column" in str(info.value)
    assert (info.value.reslab_callback, info.value.reslab_event) == ("Broken", "after_batch")
    # A user mistake inside a built-in callback says which one, and keeps its type.
    learn = learner(toy_net(), batches(x, y, 8), batches(x, y, 8), cbs=[EarlyStopping("f1")])
    with pytest.raises(ValueError, match="callback EarlyStopping failed in after_epoch: .*'f1'"):
        learn.fit(1)


def test_history_does_not_depend_on_the_nan_guard():
    """The Learner computes the batch loss itself: without TerminateOnNaN the Recorder still
    gets every batch's loss, equal to a direct computation."""
    from reslab.training import TerminateOnNaN

    x, y = toy_data(32)
    model = toy_net()
    ref = copy.deepcopy(model)
    learn = learner(model, batches(x, y, 8), opt="sgd", lr=0.05, wd=0.0, momentum=0.0)
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, TerminateOnNaN)])
    assert not any(isinstance(cb, TerminateOnNaN) for cb in learn.cbs)
    learn.fit(1)
    # The same steps by hand: plain SGD, the loss of each batch before its step.
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    expected = []
    for xb, yb in batches(x, y, 8):
        loss = nn.functional.cross_entropy(ref(xb), yb)
        expected.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert learn.recorder.losses == pytest.approx(expected, rel=1e-5)
    assert learn.recorder.history[0]["train_loss"] == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_sgd_without_momentum_and_parameter_groups_with_lr_scale():
    """SGD at momentum 0 (no Nesterov) and per-group ``lr_scale`` on the ordinary Learner."""
    x, y = toy_data(16)
    model = toy_net()
    ref = copy.deepcopy(model)

    def two_speeds(m, wd):
        return [
            {"params": list(m[0].parameters()), "weight_decay": 0.0, "lr_scale": 0.1},
            {"params": list(m[-1].parameters()), "weight_decay": 0.0, "lr_scale": 1.0},
        ]

    learn = learner(model, batches(x, y, 8), opt="sgd", momentum=0.0, param_groups=two_speeds)
    learn.fit(1, lr=0.2)
    opt = torch.optim.SGD(
        [{"params": ref[0].parameters(), "lr": 0.02}, {"params": ref[-1].parameters()}], lr=0.2
    )
    for xb, yb in batches(x, y, 8):
        opt.zero_grad()
        nn.functional.cross_entropy(ref(xb), yb).backward()
        opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_extra_validation_and_running_train_accuracy_match_direct_computations():
    from reslab.training import ExtraValidation

    x, y = toy_data(32)
    extra_x, extra_y = toy_data(20, seed=5)
    model = toy_net(bn=True)
    seen = []

    class Spy(Callback):
        order = 30  # after_validate, before ExtraValidation (35) adds its numbers

        def before_epoch(self):
            self.correct = 0

        def after_batch(self):  # the running accuracy by hand, from the same predictions
            if self.learn.training:
                self.correct += int((self.learn.pred.argmax(-1) == self.learn.yb).sum())

        def after_validate(self):
            with torch.no_grad():
                logits = self.learn.model.eval()(extra_x)
            self.learn.model.train()
            seen.append(
                (
                    nn.functional.cross_entropy(logits, extra_y).item(),
                    (logits.argmax(1) == extra_y).float().mean().item(),
                    self.correct / 32,
                )
            )

    extra = ExtraValidation(batches(extra_x, extra_y, 6), "train_eval")
    learn = learner(model, batches(x, y, 8), batches(x, y, 8), cbs=[extra, Spy()])
    learn.fit(2, lr=0.1)
    for row, (loss, acc, running) in zip(learn.recorder.history, seen):
        assert row["train_eval_loss"] == pytest.approx(loss, rel=1e-5)
        assert row["train_eval_accuracy"] == pytest.approx(acc)
        assert row["train_accuracy"] == pytest.approx(running)
    assert learn.model.training  # put back in train mode by the Learner's validate
