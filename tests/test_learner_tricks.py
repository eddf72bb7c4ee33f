"""Training features (callbacks) against hand computations and torch references."""

from __future__ import annotations

import copy
import math

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

    learn = learner(
        toy_net(),
        batches(x, y, 16),
        batches(x, y, 16),
        cbs=[MixedPrecision("bf16"), Dtype()],
        lr=0.1,
    )
    learn.fit(2)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert learn.recorder.history[-1]["train_loss"] < learn.recorder.history[0]["train_loss"] + 1


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


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from safetensors.torch import load_file

    x, y = toy_data(32)
    calls = {"n": 0}

    def loss_func(pred, target):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(pred, target)
        return loss * float("nan") if calls["n"] == 7 else loss

    learn = learner(
        toy_net(), batches(x, y, 8), loss_func=loss_func, cbs=[SaveCheckpoint(tmp_path)]
    )
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, batch 3"):
        learn.fit(3)
    saved = load_file(str(tmp_path / "checkpoint.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())
    for k, v in learn.model.state_dict().items():  # no step was taken on the NaN batch
        assert torch.isfinite(v).all(), k


def test_lr_find_sweeps_and_restores():
    x, y = toy_data(64)
    model = toy_net()
    learn = learner(model, batches(x, y, 8), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    res = lr_find(learn, start_lr=1e-5, end_lr=1.0, num_it=20)
    ratios = [b / a for a, b in zip(res.lrs, res.lrs[1:])]
    assert ratios == pytest.approx([10 ** (5 / 19)] * len(ratios), rel=1e-6)
    assert res.lrs[0] == pytest.approx(1e-5) and len(res.lrs) <= 20
    assert 1e-5 <= res.suggestion <= 1.0
    # smoothing: debiased EMA of the raw losses (beta 0.98)
    avg = 0.0
    for i, raw in enumerate(res.raw_losses, 1):
        avg = 0.98 * avg + 0.02 * raw
        assert res.losses[i - 1] == pytest.approx(avg / (1 - 0.98**i))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert learn.recorder.history == [] and learn.step == 0


def test_suggest_lr_finds_steepest_descent():
    from reslab.training import suggest_lr

    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    # a loss that falls fastest around lr = 1e-3, bottoms out, then explodes
    losses = [2.0 - math.tanh(2 * (math.log10(lr) + 3)) + (5 if lr > 0.1 else 0) for lr in lrs]
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=0.8)


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


def test_tensorboard_callback(tmp_path):
    from reslab.training import TensorBoardCallback

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardCallback(tmp_path)
        return
    x, y = toy_data(16)
    cbs = [TensorBoardCallback(tmp_path)]
    learner(toy_net(), batches(x, y, 8), batches(x, y, 8), cbs=cbs).fit(1)
    assert list(tmp_path.glob("events.out.tfevents.*"))
