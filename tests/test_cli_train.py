"""``reslab train / eval / plot lr|history`` end to end on a small idx-format data set."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
import torch

from reslab import load_checkpoint
from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=320, n_test=100)


def _train_args(data, out, *extra):
    return [
        "train",
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--model",
        "resnet20",
        "--width",
        "0.5",
        "--epochs",
        "3",
        "--bs",
        "16",
        "--lr",
        "0.1",
        "--no-progress",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(_train_args(data, out, "--amp", "--channels-last", "--ema", "0.9")) == 0
    return out


def _plain_test_set(data) -> tuple[torch.Tensor, torch.Tensor]:
    # Independent of reslab's loaders: torchvision's idx reader.
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    raw = data / "t10k-images.raw"
    raw.write_bytes(gzip.decompress((data / "t10k-images-idx3-ubyte.gz").read_bytes()))
    x = read_sn3_pascalvincent_tensor(str(raw)).float().div(255).unsqueeze(1)
    lraw = data / "t10k-labels.raw"
    lraw.write_bytes(gzip.decompress((data / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    return x, read_sn3_pascalvincent_tensor(str(lraw)).long()


def _plain_logits(data, model, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A bare forward pass over the test set (under bf16 autocast when the run used --amp)."""
    x, y = _plain_test_set(data)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model.eval()(x).float(), y


def _plain_test_accuracy(data, model) -> float:
    logits, y = _plain_logits(data, model)
    return (logits.argmax(1) == y).float().mean().item()


# The toy test set (make_patterns) has 10 images of each class, told apart by brightness
# alone (levels 22 apart, noise below 12): a perfect score is reachable, and any prediction
# that ignores the image scores exactly 0.10. Untrained nets score 0.10-0.20 (seeds 0-4), a
# run at a learning rate of 1e-9 0.10; the 3-epoch runs below reach 0.52-0.90 (cross-entropy,
# seeds 0-3) and 0.60-1.00 (negative sampling, seeds 0-3).
LEARNED = 0.4


def test_train_writes_the_run_folder(run, data, capsys):
    names = {p.name for p in run.iterdir()}
    assert {
        "model.safetensors",
        "checkpoint.safetensors",
        "history.csv",
        "history.json",
        "curves.png",
        "metrics.json",
        "config.json",
    } <= names
    metrics = json.loads((run / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "epochs",
        "wall_seconds",
        "samples_per_s",
        "model",
        "data",
        "seed",
    ):
        assert key in metrics
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    model = load_checkpoint(run / "model.safetensors")
    assert model.in_chans == 1 and model.num_classes == 10
    assert model.checkpoint_state["class_names"][9] == "Ankle boot"
    # The reported figures are those of the saved model, evaluated as the run did (bf16).
    # A tie broken the other way by a different bf16 summation order could flip one image.
    logits, y = _plain_logits(data, model, bf16=True)
    accuracy = (logits.argmax(1) == y).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=0.011)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-3)
    assert _plain_test_accuracy(data, model) >= LEARNED  # fp32 too: the run actually learned


def test_eval_prints_accuracy_and_confusion(run, data, capsys, tmp_path):
    out = tmp_path / "cm.png"
    code = main(
        [
            "eval",
            str(run),
            "--data",
            "fashion-mnist",
            "--data-dir",
            str(data),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    numbers = json.loads(text.strip().splitlines()[-1])
    model = load_checkpoint(run / "model.safetensors")
    assert numbers["accuracy"] == pytest.approx(_plain_test_accuracy(data, model), abs=1e-6)
    assert numbers["count"] == 100
    assert "confusion matrix" in text and "Ankle boot"[:10] in text
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plot_history_and_lr_schedule(run, tmp_path):
    assert main(["plot", "history", str(run), "--out", str(tmp_path / "h.png")]) == 0
    assert main(["plot", "lr", str(run), "--out", str(tmp_path / "lr.png")]) == 0
    assert (tmp_path / "h.png").stat().st_size > 1000 and (tmp_path / "lr.png").stat().st_size


def test_lr_find_classes_and_valid_split(data, tmp_path, capsys):
    out = tmp_path / "r"
    args = _train_args(
        data,
        out,
        "--lr-find",
        "--classes",
        "Trouser,Bag",
        "--valid-pct",
        "0.25",
        "--schedule",
        "constant",
        "--opt",
        "adamw",
        "--accum",
        "2",
        "--clip",
        "1",
    )
    args.remove("--lr")
    args.remove("0.1")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lr_find: suggested learning rate" in printed
    finder = json.loads((out / "lr_find.json").read_text())
    assert len(finder["lrs"]) > 5
    hist = json.loads((out / "history.json").read_text())
    assert hist["batch_lr"][0] == pytest.approx(finder["suggestion"])  # constant LR = suggestion
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["Trouser", "Bag"]
    assert load_checkpoint(out / "model.safetensors").num_classes == 2
    assert main(["plot", "lr", str(out)]) == 0 and (out / "lr_find.png").is_file()


def test_negative_sampling_loss(data, tmp_path):
    out = tmp_path / "nce"
    args = _train_args(data, out, "--loss", "nce", "--negatives", "3", "--no-amp")
    args[args.index("--lr") + 1] = "0.2"
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = load_checkpoint(out / "model.safetensors")
    assert metrics["test_accuracy"] == pytest.approx(_plain_test_accuracy(data, model), abs=1e-6)
    assert metrics["test_accuracy"] >= LEARNED


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "imagenet-typo", "--out", "X"], "unknown data set"),
        (["train", "--data", "fashion-mnist"], "--data and --out are required"),
        (
            ["train", "--data", "fashion-mnist", "--out", "X", "--model", "resnet2O"],
            "unknown model",
        ),
        (["train", "--data", "fashion-mnist", "--out", "X", "--loss", "nce"], "--negatives"),
        (["train", "--data", "fashion-mnist", "--out", "X", "--schedule", "step"], "--milestones"),
        (["train", "--data", "fashion-mnist", "--out", "X", "--warmup-epochs", "1"], "step"),
        (
            ["train", "--data", "fashion-mnist", "--out", "X", "--schedule", "step"]
            + ["--milestones", "2", "--warmup-epochs", "2"],
            "before the first",
        ),
        (["plot", "history", "/nonexistent-run"], "no history.json"),
        (["eval", "/nonexistent.safetensors", "--data", "fashion-mnist"], "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, data, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESLAB_DATA", str(data))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag",
    [
        ["--epochs", "0"],
        ["--bs", "-3"],
        ["--valid-pct", "1.5"],
        ["--milestones", "123,82"],
        ["--milestones", "a,b"],
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--wd", "nan"],
        ["--momentum", "inf"],
        ["--clip", "-1"],
        ["--data-dir", "/nonexistent-data-folder"],
    ],
)
def test_bad_numbers_and_folders_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "fashion-mnist", "--out", "x", *flag])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reslab train: error: argument") and flag[0] in err[-1]


def test_python_callers_get_the_same_checks():
    from reslab.recipes import TrainConfig

    with pytest.raises(ValueError, match="--wd: expected a number >= 0"):
        TrainConfig(data="fashion-mnist", out="x", wd=float("nan"))
    with pytest.raises(ValueError, match="--data-dir: expected an existing folder"):
        TrainConfig(data="fashion-mnist", out="x", data_dir="/nonexistent-data-folder")


def test_eval_refuses_mismatched_data(run, tmp_path, capsys):
    from test_data_synthetic import write_fake_cifar_pickles

    write_fake_cifar_pickles(tmp_path)
    assert main(["eval", str(run), "--data", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert "1-channel" in capsys.readouterr().err
