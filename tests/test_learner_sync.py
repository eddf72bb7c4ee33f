"""The Learner never makes the device wait for the host per batch, and what it records is
unchanged by that.

Reads from the device are counted by patching ``torch.Tensor``'s read methods (``item``,
``tolist``, ``cpu``, ``numpy`` and the ``float``/``int``/``bool`` conversions) during a fit;
the count must not grow with the number of batches. On a GPU each of these reads waits for
every kernel queued before it; on the CPU they are merely counted.
"""

from __future__ import annotations

import collections
import contextlib
import math

import pytest
import torch
from torch import nn

from reslab.data import TensorImageDataset, make_loader
from reslab.training import (
    EMA,
    Callback,
    ChannelsLast,
    CSVLogger,
    EarlyStopping,
    ExtraValidation,
    GradientAccumulation,
    GradientClip,
    Learner,
    MixedPrecision,
    SaveCheckpoint,
)

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_reads():
    """Count calls of the host-read methods of every tensor while the block runs."""
    counts: collections.Counter = collections.Counter()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, real):
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return real(self, *args, **kwargs)

        return wrapper

    for name, real in saved.items():
        setattr(torch.Tensor, name, counting(name, real))
    try:
        yield counts
    finally:
        for name, real in saved.items():
            setattr(torch.Tensor, name, real)


def toy_images(n: int, seed: int = 0) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.randint(0, 80, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    images[torch.arange(n), labels % 3, labels, :] = 250  # learnable: a bright row per class
    return TensorImageDataset(images, labels, ["a", "b", "c", "d"])


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def _every_feature(folder, train_eval) -> list[Callback]:
    """The callbacks `reslab train` can add, all at once."""
    return [
        MixedPrecision("bf16"),
        ChannelsLast(),
        GradientAccumulation(2),
        GradientClip(1.0),
        EMA(0.9),
        ExtraValidation(train_eval, "train_eval"),
        CSVLogger(folder),
        SaveCheckpoint(folder),
        EarlyStopping("valid_loss", patience=5),
    ]


def reads_during_fit(batches_per_epoch: int, tmp_path, epochs: int = 2, extra=()) -> int:
    """Host reads during a fit of ``epochs`` epochs with every feature on; the validation and
    extra-validation sets grow with the training set."""
    bs = 8
    train = toy_images(bs * batches_per_epoch)
    valid = toy_images(bs * batches_per_epoch, seed=1)
    folder = tmp_path / f"run{batches_per_epoch}"
    learn = Learner(
        small_net(),
        make_loader(train, bs, train=True),
        make_loader(valid, bs, train=False),
        metrics=("accuracy", "top5"),
        lr=0.05,
        cbs=[*_every_feature(folder, make_loader(valid, bs, train=False)), *extra],
        progress=True,
    )
    learn.progress.refresh_s = math.inf  # the bar's live values: read on a timer, not here
    with count_reads() as counts:
        learn.fit_one_cycle(epochs)
    assert learn.recorder.history[-1]["epoch"] == epochs  # it really trained
    return sum(counts.values())


def test_host_reads_do_not_grow_with_the_number_of_batches(tmp_path):
    few = reads_during_fit(3, tmp_path)
    many = reads_during_fit(12, tmp_path)
    assert few == many, (few, many)


def test_the_read_counter_sees_a_per_batch_read(tmp_path):
    """The counter works: one callback that reads the loss every batch makes the count grow
    with the batches (the Learner before this change did that several times a batch)."""

    class ReadsTheLoss(Callback):
        def after_batch(self):
            if self.learn.training:
                float(self.learn.batch_loss)

    few = reads_during_fit(3, tmp_path, epochs=1, extra=[ReadsTheLoss()])
    many = reads_during_fit(12, tmp_path, epochs=1, extra=[ReadsTheLoss()])
    assert many - few == 12 - 3


class HandRecord(Callback):
    """What the history should hold, read the old way: every batch's loss, LR and correct
    count read on the spot, and the validation measured by hand with torch."""

    order = 100  # after every built-in callback

    def __init__(self, valid) -> None:
        self.valid = valid
        self.losses, self.lrs, self.rows = [], [], []
        self._epoch = collections.defaultdict(float)

    def after_batch(self):
        learn = self.learn
        if not learn.training:
            return
        loss = float(learn.batch_loss)
        bs = len(learn.yb)
        self.losses.append(loss)
        self.lrs.append(learn.opt.param_groups[0]["lr"])
        self._epoch["loss_sum"] += loss * bs
        self._epoch["n"] += bs
        self._epoch["correct"] += int((learn.pred.argmax(-1) == learn.yb).sum())

    def before_validate(self):
        model = self.learn.model
        model.eval()
        with torch.no_grad(), self.learn.autocast():
            logits = torch.cat([model(x).float() for x, _ in self.valid])
        model.train()
        labels = torch.cat([y for _, y in self.valid])
        self._valid = {
            "valid_loss": float(nn.functional.cross_entropy(logits, labels)),
            "accuracy": float((logits.argmax(-1) == labels).double().mean()),
        }

    def after_epoch(self):
        e = self._epoch
        self.rows.append(
            {
                "train_loss": e["loss_sum"] / e["n"],
                "train_accuracy": e["correct"] / e["n"],
                "lr": self.lrs[-1],
                **getattr(self, "_valid", {}),
            }
        )
        self._epoch.clear()


def test_history_equals_per_batch_reads_made_by_hand(tmp_path):
    bs = 8
    train, valid = toy_images(bs * 6), toy_images(bs * 4, seed=1)
    valid_batches = list(make_loader(valid, bs, train=False))
    hand = HandRecord(valid_batches)
    learn = Learner(
        small_net(),
        make_loader(train, bs, train=True),
        make_loader(valid, bs, train=False),
        lr=0.05,
        cbs=[MixedPrecision("bf16"), GradientAccumulation(2), CSVLogger(tmp_path), hand],
        progress=False,
    )
    learn.fit_one_cycle(3)
    rec = learn.recorder
    assert rec.losses == hand.losses  # the same float32 values, bit for bit
    assert rec.lrs == hand.lrs
    assert len(rec.history) == 3
    for row, want in zip(rec.history, hand.rows):
        assert row["train_loss"] == want["train_loss"]  # same sum in the same order
        assert row["train_accuracy"] == want["train_accuracy"]
        assert row["lr"] == want["lr"]
        assert row["valid_loss"] == pytest.approx(want["valid_loss"], rel=1e-6)
        assert row["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
    import json

    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["batch_loss"] == hand.losses and saved["batch_lr"] == hand.lrs


def test_progress_bar_values_are_read_on_its_timer(tmp_path, monkeypatch):
    """With a zero refresh interval the bar reads after every batch and shows the smoothed
    loss (0.9/0.1 exponential average) and the epoch's running accuracy."""
    bs = 8
    train = toy_images(bs * 5)
    hand = HandRecord([])
    learn = Learner(
        small_net(), make_loader(train, bs, train=True), None, lr=0.05, cbs=[hand],
        progress=True,
    )  # fmt: skip
    learn.progress.refresh_s = 0.0
    shown = []
    real = learn.progress.__class__._show_values

    def spy(self):
        real(self)
        shown.append((self._smooth, self.learn.recorder.running_accuracy))

    monkeypatch.setattr(learn.progress.__class__, "_show_values", spy)
    learn.fit(1)
    smooth = None
    for i, loss in enumerate(hand.losses):
        smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
        assert shown[i][0] == pytest.approx(smooth, rel=1e-12)
    assert len(shown) == len(hand.losses) == 5
    assert shown[-1][1] == pytest.approx(learn.recorder.history[0]["train_accuracy"])


def test_a_resumed_fit_keeps_the_recorded_history(tmp_path):
    """A mid-epoch checkpoint flushes what is on the device: the resumed run's history and
    batch losses equal the uninterrupted run's."""
    bs = 8
    train = toy_images(bs * 6)

    def make(folder, cbs=()):
        return Learner(
            small_net(), make_loader(train, bs, train=True), None, lr=0.05,
            cbs=[SaveCheckpoint(folder, every_n_steps=4), *cbs], progress=False,
        )  # fmt: skip

    full = make(tmp_path / "full")
    full.fit_one_cycle(2)

    class Stop(Callback):
        order = 95  # after SaveCheckpoint

        def after_batch(self):
            if self.learn.epoch == 1 and self.learn.iter == 3:
                raise KeyboardInterrupt  # as if killed right after the mid-epoch save

    part = make(tmp_path / "part", [Stop()])
    with pytest.raises(KeyboardInterrupt):
        part.fit_one_cycle(2)
    again = make(tmp_path / "part")
    again.resume(tmp_path / "part")
    again.fit_one_cycle(2)
    assert again.recorder.losses == full.recorder.losses
    strip = [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in
             full.recorder.history]  # fmt: skip
    got = [{k: v for k, v in r.items() if k not in ("time", "samples_per_s")} for r in
           again.recorder.history]  # fmt: skip
    assert got == strip
    for p, q in zip(full.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("world", [2, 3])
def test_in_memory_loader_shares_are_tensor_split_sections(world):
    """The loader slices each global batch on the device (no index copy per batch); every
    process's share is still ``torch.tensor_split``'s section of it, uneven tails included."""
    ds = toy_images(29)
    single = make_loader(ds, 5 * world, train=False)
    shards = [make_loader(ds, 5, train=False, rank=r, world_size=world) for r in range(world)]
    for (x, y), *parts in zip(single, *shards):
        want = torch.tensor_split(torch.arange(len(y)), world)
        for (xr, yr), sec in zip(parts, want):
            assert torch.equal(yr, y[sec]) and torch.equal(xr, x[sec])
