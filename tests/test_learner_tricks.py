"""Training features (callbacks) against hand computations and torch references."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from reslab.training import (
    EMA,
    Callback,
    ChannelsLast,
    GradientAccumulation,
    GradientClip,
    Learner,
    MixedPrecision,
    SaveCheckpoint,
    TrainingDiverged,
    evaluate,
    lr_find,
)
from test_learner import batches, learner, toy_data, toy_net


def test_ema_follows_the_recurrence():
    x, y = toy_data(32)
    model = toy_net()
    snapshots = []

    class Snap(Callback):
        order = 50  # after EMA (40)

        def after_step(self):
            snapshots.append({k: v.clone() for k, v in self.learn.model.state_dict().items()})

    ema = EMA(decay=0.9, warmup=False, apply_at_end=False)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    learn = learner(model, batches(x, y, 8), cbs=[ema, Snap()], lr=0.1)
    learn.fit(1)
    hand = init
    for snap in snapshots:
        hand = {k: 0.9 * hand[k] + 0.1 * snap[k] for k in hand}
    for k in hand:
        torch.testing.assert_close(ema.shadow[k], hand[k], rtol=1e-6, atol=1e-7)


def test_ema_weights_used_for_validation_and_applied_at_end():
    x, y = toy_data(32)
    model = toy_net()
    ema = EMA(decay=0.5, warmup=False)
    learn = learner(model, batches(x, y, 8), batches(x, y, 32), cbs=[ema], lr=0.2)
    learn.fit(1)
    with torch.no_grad():
        ref = nn.functional.cross_entropy(model.eval()(x), y).item()  # model now holds EMA
    assert learn.recorder.history[0]["valid_loss"] == pytest.approx(ref, rel=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema.shadow[k])


def test_gradient_accumulation_equals_one_big_batch():
    x, y = toy_data(32)
    big, small = toy_net(), toy_net()
    learner(big, batches(x, y, 16), lr=0.1, wd=0.0).fit(1)
    acc = learner(small, batches(x, y, 8), lr=0.1, wd=0.0, cbs=[GradientAccumulation(2)])
    acc.fit(1)
    assert acc.step == 2
    for p, q in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_gradient_clip_matches_torch_clip():
    x, y = toy_data(16)
    model, ref = toy_net(), toy_net()
    learn = learner(model, batches(x, y, 16), lr=0.5, wd=0.0, cbs=[GradientClip(0.05)])
    learn.fit(1)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5, momentum=0.9, nesterov=True)
    nn.functional.cross_entropy(ref(x), y).backward()
    norm = nn.utils.clip_grad_norm_(ref.parameters(), 0.05)
    opt.step()
    assert norm > 0.05  # the clip was active
    assert learn.gradient_clip.last_norm == pytest.approx(float(norm), rel=1e-5)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_bf16_autocast_on_cpu():
    x, y = toy_data(32)
    seen = []

    class Dtype(Callback):
        def after_loss(self):
            seen.append(self.learn.pred.dtype)

    model, ref = toy_net(), toy_net()
    learn = learner(
        model,
        batches(x, y, 16),
        batches(x, y, 16),
        cbs=[MixedPrecision("bf16"), Dtype()],
        lr=0.1,
        wd=0.0,
    )
    learn.fit(2)
    assert seen and all(d == torch.bfloat16 for d in seen)
    # Reference: the same steps by hand under torch.autocast (bf16 forward, fp32 weights).
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(2):
        for xb, yb in batches(x, y, 16):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(ref(xb), yb)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert learn.recorder.losses == pytest.approx(losses, rel=1e-6)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_fp16_gradscaler_skips_inf_steps():
    x, y = toy_data(16)
    model = toy_net()

    class Poison(Callback):
        order = -20  # before the scaler unscales

        def before_step(self):
            if self.learn.iter == 0:
                self.learn.model[0].weight.grad[0, 0, 0, 0] = float("inf")

    before = copy.deepcopy(model.state_dict())
    mp = MixedPrecision("fp16")
    learn = learner(model, batches(x, y, 16), cbs=[mp, Poison()], lr=0.1)
    learn.fit(1)
    assert mp.scaler is not None and mp.scaler.get_scale() < 65536.0  # backed off
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the inf step was skipped
    assert "scaler" in mp.state_dict()


def test_channels_last_model_and_inputs():
    x, y = toy_data(16)
    formats = []

    class Check(Callback):
        def before_batch(self):
            formats.append(self.learn.xb.is_contiguous(memory_format=torch.channels_last))

    model = toy_net()
    learn = learner(model, batches(x, y, 8), cbs=[ChannelsLast(), Check()])
    learn.fit(1)
    assert formats == [True, True]
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def _nan_at_call(n: int):
    calls = {"n": 0}

    def loss_func(pred, target):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(pred, target)
        return loss * float("nan") if calls["n"] == n else loss

    return loss_func, calls


def _saved_position(folder) -> tuple[int, int]:
    from reslab.training import read_checkpoint_meta

    meta = read_checkpoint_meta(folder / "checkpoint.safetensors")
    return meta["epoch"], meta["batch"]


def test_nan_loss_stops_at_the_epoch_end_and_keeps_last_good_checkpoint(tmp_path):
    from safetensors.torch import load_file

    x, y = toy_data(32)
    loss_func, calls = _nan_at_call(7)  # 4 batches an epoch: epoch 2, batch 3
    learn = learner(
        toy_net(), batches(x, y, 8), loss_func=loss_func, cbs=[SaveCheckpoint(tmp_path)]
    )
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became nan at epoch 2, batch 3 \(step 6\), noticed at "
        r"epoch 2, batch 4: .*last good checkpoint",
    ):
        learn.fit(3)
    assert calls["n"] == 8  # the losses are read at the epoch's end: epoch 2 ran to its end
    assert _saved_position(tmp_path) == (1, 0)  # epoch 1's checkpoint, not epoch 2's
    saved = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert len(learn.recorder.history) == 1  # epoch 2 got no history row


def test_nan_loss_check_every_batch_takes_no_step_on_the_bad_batch(tmp_path):
    x, y = toy_data(32)
    loss_func, calls = _nan_at_call(7)
    learn = learner(
        toy_net(), batches(x, y, 8), loss_func=loss_func, cbs=[SaveCheckpoint(tmp_path)]
    )
    learn.terminate_on_nan.every = 1
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, batch 3 \(step 6\):"):
        learn.fit(3)
    assert calls["n"] == 7
    for k, v in learn.model.state_dict().items():  # no step was taken on the NaN batch
        assert torch.isfinite(v).all(), k


def test_nan_loss_is_never_checkpointed_mid_epoch(tmp_path):
    # A checkpoint after every batch: the one after the NaN batch must not be written, though
    # the loss is still on the device when SaveCheckpoint runs.
    x, y = toy_data(32)
    loss_func, calls = _nan_at_call(7)
    learn = learner(
        toy_net(),
        batches(x, y, 8),
        loss_func=loss_func,
        cbs=[SaveCheckpoint(tmp_path, every_n_steps=1)],
    )
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch 3 \(step 6\):"):
        learn.fit(3)
    assert calls["n"] == 7
    assert _saved_position(tmp_path) == (1, 2)  # after epoch 2's second batch


def _mse_on_one_hot(pred, target):
    # Unlike cross-entropy on this separable toy set, a quadratic loss blows up at large LRs.
    return (pred - nn.functional.one_hot(target, 4).float()).pow(2).mean()


@pytest.mark.parametrize("end_lr, stops_early", [(1.0, False), (10.0, True)])
def test_lr_find_sweep_against_a_plain_loop(end_lr, stops_early):
    x, y = toy_data(64)
    train = batches(x, y, 8)  # 8 batches an epoch: the 40-step sweep spans 5 epochs
    model, ref = toy_net(), toy_net()
    learn = learner(model, train, lr=0.1, wd=0.0, loss_func=_mse_on_one_hot)
    res = lr_find(learn, start_lr=1e-3, end_lr=end_lr, num_it=40)

    # Reference: step i at lr = start * (end/start) ** (i / (num_it - 1)), a debiased EMA of
    # the losses (beta 0.98), stop after 40 steps or once it exceeds 4x its best value.
    opt = torch.optim.SGD(ref.parameters(), lr=1.0, momentum=0.9, nesterov=True)
    lrs, raw, smooth, avg, best = [], [], [], 0.0, math.inf
    for i in range(40):
        lr = 1e-3 * (end_lr / 1e-3) ** (i / 39)
        for group in opt.param_groups:
            group["lr"] = lr
        xb, yb = train[i % len(train)]
        loss = _mse_on_one_hot(ref(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = 0.98 * avg + 0.02 * loss.item()
        lrs.append(lr)
        raw.append(loss.item())
        smooth.append(avg / (1 - 0.98 ** (i + 1)))
        best = min(best, smooth[-1])
        if smooth[-1] > 4 * best:
            break
    assert (len(lrs) < 40) == stops_early  # both ends of the sweep are exercised
    assert res.lrs == pytest.approx(lrs, rel=1e-12, abs=0)
    assert res.raw_losses == pytest.approx(raw, rel=1e-5)
    assert res.losses == pytest.approx(smooth, rel=1e-5)


class _DrawsRandom(Callback):
    """Draws from Python's and NumPy's generators every batch (the model's dropout draws
    from torch's), so a sweep that does not put them back changes the next fit."""

    def before_batch(self):
        random.random()
        np.random.rand()


def _seeded_learner():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    x, y = toy_data(64)
    model = nn.Sequential(toy_net(), nn.Dropout(0.3))
    return learner(model, batches(x, y, 8), lr=0.05, cbs=[_DrawsRandom()])


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        assert a == b


def test_lr_find_restores_model_optimizer_rng_and_counters():
    learn = _seeded_learner()
    learn.fit(1)  # momentum buffers, counters and history now exist
    model = copy.deepcopy(learn.model.state_dict())
    opt = copy.deepcopy(learn.opt.state_dict())
    rngs = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    counters = (learn.step, learn.epoch, learn.train_iter)
    history = copy.deepcopy(learn.recorder.history)
    res = lr_find(learn, start_lr=1e-4, end_lr=1.0, num_it=12)
    assert len(res.lrs) == 12
    _assert_same(learn.model.state_dict(), model)
    _assert_same(learn.opt.state_dict(), opt)  # momentum buffers and each group's lr
    _assert_same((torch.get_rng_state(), random.getstate(), np.random.get_state()), rngs)
    assert (learn.step, learn.epoch, learn.train_iter) == counters
    assert learn.recorder.history == history
    # So the next fit continues exactly as if the sweep had never run.
    learn.fit(1)
    twin = _seeded_learner()
    twin.fit(1)
    twin.fit(1)
    _assert_same(learn.model.state_dict(), twin.model.state_dict())
    assert learn.step == twin.step == 16


def test_suggest_lr_finds_steepest_descent():
    from reslab.training import suggest_lr

    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]  # equal steps in log LR
    # Loss drops d[i] = losses[i + 1] - losses[i]: a gentle fall, the steepest pair of drops
    # at 9 and 10, the minimum at 16, then a jump up at 17 and a steeper fall after it.
    drops = [-0.05] * 24
    drops[9], drops[10] = -0.5, -0.4
    drops[16], drops[17], drops[18] = 9.0, -8.5, 0.0
    losses = [3.0]
    for d in drops:
        losses.append(losses[-1] + d)
    assert min(range(25), key=losses.__getitem__) == 16 and losses[18] > losses[16]
    # Central slopes (d[i-1] + d[i]) / (2 * step): i = 10 gives -0.9, i = 9 gives -0.55,
    # i = 11 gives -0.45; i = 18 (-8.5) is steeper but lies beyond the minimum.
    assert suggest_lr(lrs, losses, method="steepest") == lrs[10]
    assert suggest_lr(lrs[:3], [1.0, 0.5, 0.2]) == lrs[1]  # too short to differentiate


def test_suggest_lr_valley_ignores_a_noisy_start():
    from reslab.training import suggest_lr

    lrs = [10 ** (-7 + i * 0.3) for i in range(24)]
    # A sweep like fastbook's ResBlock net at 64 px: the smoothed loss starts high and dips at
    # once (noise), stays flat, then falls gently from index 10 to its minimum at 19 and rises.
    losses = [3.4, 2.9] + [3.0] * 8 + [2.95 - 0.05 * k for k in range(10)] + [2.6, 3.0, 4.0, 6.0]
    # Longest strictly falling subsequence: 3.4 (0), 3.0 (2), 2.95 ... 2.5 (10-19): from 0 to
    # 19, so the suggestion is two thirds along it, index 0 + 19 * 2 // 3 = 12, inside the fall.
    assert suggest_lr(lrs, losses) == lrs[12]
    # The steepest central slope is the noise at index 1: (3.0 - 3.4) / 2 steps.
    assert suggest_lr(lrs, losses, method="steepest") == lrs[1]
    with pytest.raises(ValueError, match="unknown suggestion method"):
        suggest_lr(lrs, losses, method="cliff")


def test_evaluate_with_class_index_and_confusion():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7))
    x = torch.randn(30, 3, 2, 2)
    y = torch.randint(0, 3, (30,))
    idx = [5, 1, 3]  # data label i is the model's class idx[i]
    res = evaluate(model, batches(x, y, 8), idx)
    with torch.no_grad():
        logits = model(x)[:, idx]
    pred = logits.argmax(1)
    assert res.accuracy == pytest.approx((pred == y).float().mean().item())
    assert res.loss == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    for i in range(3):
        for j in range(3):
            assert res.confusion[i, j] == int(((y == i) & (pred == j)).sum())
    assert res.count == 30 and res.confusion.sum() == 30


def test_plots_write_pngs(tmp_path):
    from reslab.training.plots import plot_confusion, plot_history, plot_lr_find

    hist = [
        {"epoch": 1, "train_loss": 1.0, "valid_loss": 0.9, "accuracy": 0.5},
        {"epoch": 2, "train_loss": 0.7, "valid_loss": 0.8, "accuracy": 0.6},
    ]
    for out in (
        plot_history(hist, tmp_path / "h.png"),
        plot_lr_find([1e-4, 1e-3, 1e-2], [2.0, 1.5, 3.0], 1e-3, tmp_path / "l.png"),
        plot_confusion(torch.eye(3, dtype=torch.int64), ["a", "b", "c"], tmp_path / "c.png"),
    ):
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bars_and_epoch_summary(capsys):
    x, y = toy_data(16)
    learn = Learner(toy_net(), batches(x, y, 8), batches(x, y, 8), progress=True)
    learn.fit(2, lr=0.1)
    captured = capsys.readouterr()
    out, err = captured.out, captured.err  # summary lines on stdout, bars on stderr
    assert "epoch 1/2" in out and "epoch 2/2" in out and "valid_loss" in out
    assert "epochs:" in err and "epoch 1:" in err


def test_tensorboard_callback_logs_the_recorders_values(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from reslab.training import TensorBoardCallback

    x, y = toy_data(16)
    learn = learner(
        toy_net(), batches(x, y, 8), batches(x, y, 8), cbs=[TensorBoardCallback(tmp_path)]
    )
    learn.fit_one_cycle(2, 0.1)  # the LR changes every batch
    (events,) = tmp_path.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()

    def logged(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    # TensorBoard stores float32: compare at float32 precision.
    assert logged("train/loss") == [
        (i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(learn.recorder.losses)
    ]
    assert logged("train/lr") == [
        (i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(learn.recorder.lrs)
    ]
    assert len(learn.recorder.lrs) == 4 and len(set(learn.recorder.lrs)) == 4
    history = learn.recorder.history
    assert len(history) == 2
    for key in ("train_loss", "valid_loss", "accuracy", "lr"):
        expected = [(row["epoch"], pytest.approx(row[key], rel=1e-6)) for row in history]
        assert logged(f"epoch/{key}") == expected, key


def test_tensorboard_missing_is_one_clear_import_error(tmp_path, monkeypatch):
    import sys

    from reslab.training import TensorBoardCallback

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardCallback(tmp_path)
