"""Transfer learning: frozen parameters and BN statistics, discriminative LRs, fine_tune,
grayscale inputs, and cached features that reproduce the uncached frozen run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.data import TensorImageDataset, TensorLoader
from reslab.training import Callback, Learner
from reslab.transfer import (
    FeatureLoader,
    FeatureSet,
    ViewAverage,
    adapt_to_grayscale,
    discriminative_param_groups,
    extract_features,
    fine_tune,
    freeze,
    load_features,
    save_features,
    unfreeze,
)


def _model(seed_offset=0, **kw):
    torch.manual_seed(seed_offset)
    model = reslab.create_model("resnet20", num_classes=4, **kw)
    return randomize_bn(model, seed=seed_offset)


def _data(n=32, channels=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (n,), generator=g)
    return TensorImageDataset(x, y, ["a", "b", "c", "d"])


def _backbone_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def test_frozen_backbone_in_train_mode_drifts_unless_bn_is_pinned():
    x = torch.rand(8, 3, 16, 16) * 3  # statistics unlike the running ones
    # The pitfall: requires_grad=False alone, model in train mode, BN stats move.
    naive = _model()
    for name, p in naive.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    before = naive.bn1.running_mean.clone()
    naive.train()(x)
    assert not torch.equal(naive.bn1.running_mean, before)
    # freeze(): a whole Learner fit (which calls model.train() each epoch) changes nothing.
    model = _model()
    freeze(model, "backbone")
    state = _backbone_state(model)
    emb = model.eval().backbone(x)
    ds = _data()
    learn = Learner(model, TensorLoader(ds, 8, shuffle=True, augment=True, drop_last=True),
                    None, lr=0.5, progress=False)  # fmt: skip
    fc_before = model.fc.weight.clone()
    learn.fit(2)
    assert model.training and not model.bn1.training
    for k, v in _backbone_state(model).items():
        assert torch.equal(v, state[k]), k
    torch.testing.assert_close(model.eval().backbone(x), emb)
    assert not torch.equal(model.fc.weight, fc_before)


def test_freeze_stages_and_unfreeze():
    model = _model()
    frozen = freeze(model, "stages:1")
    assert model.conv1 in frozen and model.layer1 in frozen and model.layer2 not in frozen
    assert not model.layer1[0].conv1.weight.requires_grad
    assert model.layer2[0].conv1.weight.requires_grad and model.fc.weight.requires_grad
    model.train()
    assert not model.layer1[0].bn1.training and model.layer2[0].bn1.training
    unfreeze(model)
    model.train()
    assert model.layer1[0].bn1.training and all(p.requires_grad for p in model.parameters())
    assert freeze(model, "none") == []
    with pytest.raises(ValueError, match="stages:N"):
        freeze(model, "stages:9")


def test_discriminative_learning_rates():
    model = _model()
    ds = _data()
    learn = Learner(model, TensorLoader(ds, 8, drop_last=True), None, lr=0.1,
                    param_groups=discriminative_param_groups(100), progress=False)  # fmt: skip
    seen = []

    class Spy(Callback):
        def after_step(self):
            seen.append({id(p): g["lr"] for g in self.learn.opt.param_groups for p in g["params"]})

    learn.fit_one_cycle(1, 0.1, cbs=[Spy()])
    for lrs in seen:
        head = lrs[id(model.fc.weight)]
        # stem, stage 1..3, head: 5 groups, LR 1/100 → 1 geometrically (fastai's slice).
        body = [model.conv1, model.layer1[0].conv1, model.layer2[0].conv1, model.layer3[0].conv1]
        for i, param in enumerate(m.weight for m in body):
            assert lrs[id(param)] == pytest.approx(head * 100 ** (-(4 - i) / 4))
    assert len(seen) == 4 and seen[0][id(model.fc.weight)] != seen[-1][id(model.fc.weight)]


def test_fine_tune_freezes_then_unfreezes():
    model = _model()
    ds = _data()
    snapshots = []

    class Snap(Callback):
        def after_fit(self):
            snapshots.append((self.learn.model.layer1[0].conv1.weight.clone(),
                              self.learn.model.layer1[0].bn1.running_mean.clone()))  # fmt: skip

    w0 = model.layer1[0].conv1.weight.clone()
    m0 = model.layer1[0].bn1.running_mean.clone()
    learn = Learner(model, TensorLoader(ds, 8, shuffle=True, drop_last=True), None,
                    lr=0.05, cbs=[Snap()], progress=False)  # fmt: skip
    fine_tune(learn, 1, 0.05, freeze_epochs=1, lr_mult=10)
    (w1, m1), (w2, m2) = snapshots
    assert torch.equal(w1, w0) and torch.equal(m1, m0)  # frozen epoch: weights and BN stats
    assert not torch.equal(w2, w0) and not torch.equal(m2, m0)  # then everything trains
    assert all(p.requires_grad for p in model.parameters())


def test_fine_tunes_second_fit_goes_on_with_the_next_epochs_data():
    # Loaders draw order and augmentation from (seed, epoch). The first unfrozen epoch is the
    # run's second epoch: it must not replay the frozen epoch's batches, and the history
    # numbers the epochs 1, 2, 3 (not 1, 1, 2).
    ds = _data()
    loader = TensorLoader(ds, 8, shuffle=True, augment=True, drop_last=True)
    orders = []

    class Spy(Callback):
        def before_batch(self):
            if self.learn.training and self.learn.iter == 0:
                orders.append(self.learn.yb.tolist())

    learn = Learner(_model(), loader, None, lr=0.05, cbs=[Spy()], progress=False)
    fine_tune(learn, 2, 0.05, freeze_epochs=1)
    expected = [[int(y) for _, y in zip(range(8), loader_epoch(loader, e))] for e in range(3)]
    assert orders == expected and orders[0] != orders[1]
    assert [row["epoch"] for row in learn.recorder.history] == [1, 2, 3]


def loader_epoch(loader: TensorLoader, epoch: int):
    """The labels of ``loader``'s epoch ``epoch``, in order (a fresh look, by hand)."""
    loader.set_epoch(epoch)
    return (y for _, labels in loader for y in labels)


def test_grayscale_conv1_equals_repeating_the_image():
    # Equal channel means (any stds): the adapted 1-channel model is exact everywhere.
    norm = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.25, 0.3]}
    rgb = _model(normalize=norm).eval()
    gray = adapt_to_grayscale(copy.deepcopy(rgb)).eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5)
    assert gray.in_chans == 1 and gray.conv1.weight.shape[1] == 1
    # Unequal means (ImageNet's): exact wherever conv1's window lies inside the image.
    rgb = reslab.create_model("resnet18", num_classes=4).eval()
    randomize_bn(rgb)
    gray = adapt_to_grayscale(copy.deepcopy(rgb)).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        a = rgb.bn1(rgb.conv1(rgb.normalize(x.expand(-1, 3, -1, -1))))
        b = gray.bn1(gray.conv1(gray.normalize(x)))
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # 7x7 stride 2, pad 3
    torch.testing.assert_close(b[inner], a[inner], rtol=1e-4, atol=1e-4)


def test_gray_checkpoint_round_trip(tmp_path):
    model = adapt_to_grayscale(_model(normalize={"mean": [0.5] * 3, "std": [0.2] * 3})).eval()
    path = reslab.save_checkpoint(tmp_path / "g.safetensors", model)
    again = reslab.load_checkpoint(path).eval()
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(again(x), model(x))


def _fit(learn_model, train_dl, valid_dl, epochs=2):
    learn = Learner(learn_model, train_dl, valid_dl, lr=0.2, opt="sgd", progress=False)
    learn.fit_one_cycle(epochs, 0.2)
    return learn


def test_cached_features_reproduce_the_uncached_frozen_run():
    base = _model()
    train, valid = _data(32, seed=1), _data(12, seed=2)
    # Uncached: the whole network runs every batch, backbone frozen, no augmentation.
    a = copy.deepcopy(base)
    freeze(a, "backbone")
    la = _fit(a, TensorLoader(train, 8, shuffle=True, drop_last=True, seed=3),
              TensorLoader(valid, 8))  # fmt: skip
    # Cached: embeddings computed once, the head trained on them in the same batch order.
    b = copy.deepcopy(base)
    freeze(b, "backbone")
    ftrain = extract_features(b, TensorLoader(train, 32), progress=False)
    fvalid = extract_features(b, TensorLoader(valid, 32), progress=False)
    lb = _fit(ViewAverage(b.fc), FeatureLoader(ftrain, 8, train=True, seed=3),
              FeatureLoader(fvalid, 8, train=False))  # fmt: skip
    torch.testing.assert_close(b.fc.weight, a.fc.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.fc.bias, a.fc.bias, rtol=1e-5, atol=1e-6)
    ha, hb = la.recorder.history, lb.recorder.history
    for ra, rb in zip(ha, hb):
        assert ra["accuracy"] == rb["accuracy"]
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


def test_flip_views_augment_and_average():
    model = _model().eval()
    ds = _data(8)
    fs = extract_features(model, TensorLoader(ds, 4), flip=True, progress=False)
    assert fs.features.shape == (8, 2, 64)
    x = ds.images.float() / 255
    with torch.no_grad():
        torch.testing.assert_close(fs.features[:, 1], model.backbone(x.flip(-1)))
        torch.testing.assert_close(fs.features[:, 0], model.backbone(x))
    head = ViewAverage(nn.Linear(64, 4))
    with torch.no_grad():
        want = (head.head(fs.features[:, 0]) + head.head(fs.features[:, 1])) / 2
        torch.testing.assert_close(head(fs.features), want)
    loader = FeatureLoader(fs, 4, train=True)
    picked = torch.cat([xb for xb, _ in loader])
    assert picked.shape == (8, 64)
    rows = fs.features.reshape(16, 64)
    assert all(any(torch.equal(r, c) for c in rows) for r in picked)


def test_feature_files_are_reused_only_with_matching_settings(tmp_path):
    fs = FeatureSet(torch.randn(5, 1, 3), torch.arange(5), ["x"])
    path = save_features(tmp_path / "f.safetensors", fs, {"size": 32})
    back = load_features(path, {"size": 32})
    assert torch.equal(back.features, fs.features) and back.class_names == ["x"]
    assert load_features(path, {"size": 64}) is None
    path.write_bytes(path.read_bytes()[:20])
    assert load_features(path, {"size": 32}) is None


def test_cli_finetune_with_cache_features(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from reslab.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = reslab.save_checkpoint(tmp_path / "src.safetensors", _model())
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = np.array(color) + rng.integers(0, 40, (32, 32, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                    tmp_path / "d" / split / c / f"{i}.png"
                )
    out = tmp_path / "run"
    code = main(["finetune", "--from", str(src), "--data", str(tmp_path / "d"), "--epochs", "3",
                 "--bs", "4", "--lr", "0.01", "--cache-features", str(tmp_path / "feats"),
                 "--flip-tta", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "valid accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 12 and len(metrics["epoch_seconds"]) == 3
    assert sorted(p.name for p in (tmp_path / "feats").iterdir()) == [
        "features-train.safetensors", "features-valid.safetensors"]  # fmt: skip
    tuned = reslab.load_checkpoint(out / "model.safetensors")
    assert tuned.default_cfg["class_names"] == ["blue", "red"] and tuned.num_classes == 2
    # The backbone is the source's, untouched.
    torch.testing.assert_close(tuned.layer2[0].conv1.weight,
                               reslab.load_checkpoint(src).layer2[0].conv1.weight)  # fmt: skip
    # A bad combination is one line, exit 2.
    assert main(["finetune", "--from", str(src), "--data", str(tmp_path / "d"),
                 "--freeze", "none", "--cache-features"]) == 2  # fmt: skip
    assert "--cache-features needs --freeze backbone" in capsys.readouterr().err


def test_cli_fine_tune_schedule_with_plain_sgd(tmp_path, capsys):
    """``--opt sgd --momentum 0`` with fastai's schedule: discriminative LRs come from the
    ordinary Learner's parameter groups, and SGD without momentum gets no Nesterov."""
    from reslab.cli import main

    src = reslab.save_checkpoint(tmp_path / "src.safetensors", _model())
    x, y = _data(24, size=16).images, torch.arange(24) % 2
    data = tmp_path / "d"
    for split in ("train", "val"):
        for c, name in enumerate(("red", "blue")):
            (data / split / name).mkdir(parents=True)
            for i in torch.nonzero(y == c).flatten().tolist()[:6]:
                Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(
                    data / split / name / f"{i}.png"
                )
    args = ["--schedule", "fine-tune", "--opt", "sgd", "--momentum", "0", "--lr-mult", "10",
            "--freeze-epochs", "1", "--epochs", "1", "--bs", "4", "--no-progress"]  # fmt: skip
    run = ["--from", str(src), "--data", str(data), "--out", str(tmp_path / "run")]
    code = main(["finetune", *run, *args])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["epoch_seconds"]) == 2  # the frozen epoch, then the unfrozen one
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["momentum"] == 0.0 and config["opt"] == "sgd"


def test_cached_features_follow_the_weights_they_came_from(tmp_path, capsys):
    """Overwrite the source checkpoint with other weights: the feature files are recomputed,
    not reused (the cache is keyed on the backbone's weights and the images)."""
    from reslab.cli import main

    src = tmp_path / "src.safetensors"
    reslab.save_checkpoint(src, _model())
    x, y = _data(24, size=16).images, torch.arange(24) % 2
    data = tmp_path / "d"
    for split in ("train", "val"):
        for c, name in enumerate(("red", "blue")):
            (data / split / name).mkdir(parents=True)
            for i in torch.nonzero(y == c).flatten().tolist()[:6]:
                image = Image.fromarray(x[i].permute(1, 2, 0).numpy())
                image.save(data / split / name / f"{i}.png")
    feats = tmp_path / "feats"

    def run(out: str) -> tuple[dict, bytes]:
        args = ["finetune", "--from", str(src), "--data", str(data), "--epochs", "1", "--bs", "4",
                "--cache-features", str(feats), "--no-progress"]  # fmt: skip
        args += ["--out", str(tmp_path / out)]
        assert main(args) == 0, capsys.readouterr().err
        metrics = json.loads((tmp_path / out / "metrics.json").read_text())
        return metrics, (feats / "features-train.safetensors").read_bytes()

    first, first_file = run("a")
    again, again_file = run("b")
    assert again_file == first_file and again["valid_loss"] == first["valid_loss"]
    reslab.save_checkpoint(src, _model(seed_offset=1))  # other weights, same file name
    changed, changed_file = run("c")
    assert changed_file != first_file
    assert changed["valid_loss"] != first["valid_loss"]
    # The same weights in another architecture: plain20 has exactly resnet20's parameters
    # (its shortcuts have none), so only the architecture in the key tells them apart.
    from safetensors.torch import load

    def features(file: bytes) -> torch.Tensor:
        return load(file)["features"]

    reslab.save_checkpoint(src, _model())  # back to the first weights: their features again
    assert torch.equal(features(run("e")[1]), features(first_file))
    plain = reslab.create_model("plain20", num_classes=4)
    plain.load_state_dict(_model().state_dict())
    reslab.save_checkpoint(src, plain)
    assert not torch.equal(features(run("f")[1]), features(first_file))


def test_metrics_are_measured_when_the_last_epoch_skipped_validation(tmp_path):
    """A callback may end an epoch before its validation (CancelEpochException); the run's
    metrics.json must still hold the validation accuracy and loss its reader requires."""
    from reslab.recipes import FinetuneConfig, run_finetune
    from reslab.runs import read_metrics
    from reslab.training import CancelEpochException
    from test_data_synthetic import write_fake_fashion_mnist

    class SkipLastValidation(Callback):
        def after_train(self) -> None:
            if self.learn.epoch == self.learn.n_epoch - 1:
                raise CancelEpochException

    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=32, n_test=16)
    torch.manual_seed(0)
    source = reslab.save_checkpoint(
        tmp_path / "source.safetensors",
        reslab.create_model("resnet20", in_chans=1, num_classes=10, width=0.25),
    )
    cfg = FinetuneConfig(
        source=str(source), data="fashion-mnist", data_dir=str(data), out=str(tmp_path / "run"),
        schedule="one-cycle", epochs=1, bs=16, lr=0.01, size=28, progress=False, threads=1,
        device="cpu",
    )  # fmt: skip
    metrics = run_finetune(cfg, extra_cbs=(SkipLastValidation(),))
    assert read_metrics(tmp_path / "run") == metrics
    # The reference: the saved model scored by hand on the 16 validation (test split) images.
    model = reslab.load_checkpoint(tmp_path / "run" / "model.safetensors").eval()
    valid = reslab.data.load_dataset("fashion-mnist", "test", data_dir=data)
    images = torch.stack([valid[i][0] for i in range(16)]).float() / 255
    labels = torch.tensor([valid[i][1] for i in range(16)])
    with torch.no_grad():
        logits = model(images)
    assert metrics.valid_accuracy == pytest.approx(
        float((logits.argmax(1) == labels).float().mean())
    )
    assert metrics.valid_loss == pytest.approx(
        float(nn.functional.cross_entropy(logits, labels)), rel=1e-4
    )
