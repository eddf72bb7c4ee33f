"""``reslab analyze landscape|gradients`` and the experiment page that shows them, on a tiny
real degradation experiment: numbers against the runs' models evaluated here, one-line
errors on bad input, ``--json``, and the page opened in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import reslab
from browser import Browser, require_browser
from conftest import read_idx_gz
from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=48, n_test=24)


def _data_args(data: Path) -> list[str]:
    return ["--data", "fashion-mnist", "--data-dir", str(data)]


@pytest.fixture(scope="module")
def experiment(data, tmp_path_factory):
    """plain-20 and ResNet-20, one seed, one epoch: a real degradation experiment folder."""
    out = tmp_path_factory.mktemp("exp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESLAB_OFFLINE", "1")
        args = [
            "experiment",
            "degradation",
            *_data_args(data),
            "--depths",
            "20",
            "--arms",
            "plain,residual",
            "--epochs",
            "1",
            "--bs",
            "16",
            "--train-limit",
            "32",
            "--train-eval",
            "16",
            "--threads",
            "1",
            "--no-progress",
            "--no-report",
            "--out",
            str(out),
        ]
        assert main(args) == 0
    return out


def _train_images(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole (fake) training split, read here from its idx files."""
    x = torch.from_numpy(read_idx_gz(data / "train-images-idx3-ubyte.gz").copy())
    y = torch.from_numpy(read_idx_gz(data / "train-labels-idx1-ubyte.gz").copy())
    return x.float().div(255).unsqueeze(1), y.long()


def test_landscape_of_an_experiment(experiment, data, tmp_path, capsys):
    out = tmp_path / "land"
    args = [
        "analyze",
        "landscape",
        str(experiment),
        *_data_args(data),
        "--limit",
        "1000",
        "--steps",
        "3",
        "--span",
        "0.5",
        "--hessian",
        "--hessian-images",
        "8",
        "--trace-samples",
        "2",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[: printed.rindex("}") + 1])
    assert report == json.loads((out / "landscape.json").read_text())
    assert (out / "landscape.png").read_bytes()[:4] == b"\x89PNG"
    assert report["dims"] == 1 and report["direction_seed"] == 0
    assert "filter" in report["normalization"] and report["data"]["images"] == 48
    assert [(e["arm"], e["depth"], e["seed"]) for e in report["entries"]] == [
        ("plain", 20, 0),
        ("residual", 20, 0),
    ]
    x, y = _train_images(data)
    for entry in report["entries"]:
        model = reslab.load_checkpoint(
            experiment / "runs" / f"{entry['run']}" / "model.safetensors"
        ).eval()
        with torch.no_grad():
            want = float(F.cross_entropy(model(x), y))
        result = entry["result"]
        assert result["alphas"] == [-0.5, 0.0, 0.5]
        assert result["loss"][1] == pytest.approx(want, rel=1e-5)
        hessian = entry["hessian"]
        assert len(hessian["eigenvalues"]) == 1 and hessian["images"] == 8
        assert hessian["trace_samples"] == 2


def test_a_2d_landscape_of_one_run_and_its_table(experiment, data, tmp_path, capsys):
    run = experiment / "runs" / "residual20-s0"
    out = tmp_path / "two"
    args = [
        "analyze",
        "landscape",
        str(run),
        *_data_args(data),
        "--dims",
        "2",
        "--steps",
        "3",
        "--limit",
        "10",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "loss@0" in printed and "landscape.json" in printed
    report = json.loads((out / "landscape.json").read_text())
    (entry,) = report["entries"]
    assert len(entry["result"]["loss"]) == 3 and len(entry["result"]["betas"]) == 3
    assert "hessian" not in entry and report["data"]["images"] == 10


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "4"], "--steps 4: must be odd"),
        (["--arms", "plain"], "--arms and --depths choose runs of an experiment folder"),
        (["--data", "nowhere"], "unknown data set 'nowhere'"),
    ],
)
def test_landscape_bad_input_is_one_line(experiment, data, tmp_path, capsys, extra, message):
    run = experiment / "runs" / "plain20-s0"
    args = ["analyze", "landscape", str(run), *_data_args(data), "--out", str(tmp_path), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "landscape.json").exists()


def test_landscape_of_a_model_for_other_data_is_refused(data, tmp_path, capsys):
    args = ["analyze", "landscape", "resnet20", *_data_args(data), "--out", str(tmp_path)]
    assert main(args) == 2
    assert "3-channel images; fashion-mnist has 1" in capsys.readouterr().err


def test_an_unfinished_experiment_is_refused(experiment, data, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(experiment, copy)
    (copy / "results.json").unlink()
    assert main(["analyze", "landscape", str(copy), *_data_args(data)]) == 2
    assert "no results.json (has the experiment finished?)" in capsys.readouterr().err


def test_results_without_run_names_still_name_the_run_folders(experiment, data, tmp_path):
    """results.json written before it recorded each run's folder: the folder is
    ARM DEPTH -s SEED, as the experiment names them."""
    folder = tmp_path / "old"
    shutil.copytree(experiment, folder)
    results = json.loads((folder / "results.json").read_text())
    for run in results["runs"]:
        del run["run"]
    (folder / "results.json").write_text(json.dumps(results))
    args = ["analyze", "gradients", str(folder), "--arms", "residual", "--points", "6",
            "--max-lag", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    (entry,) = json.loads((tmp_path / "gradients.json").read_text())["entries"]
    assert (
        entry["spec"] == str(folder / "runs" / "residual20-s0") and entry["run"] == "residual20-s0"
    )


def test_gradients_at_init_over_seeds(tmp_path, capsys):
    args = [
        "analyze",
        "gradients",
        "--depths",
        "20",
        "--seeds",
        "2",
        "--points",
        "12",
        "--max-lag",
        "4",
        "--out",
        str(tmp_path),
        "--json",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[: printed.rindex("}") + 1])
    assert (tmp_path / "gradients.png").read_bytes()[:4] == b"\x89PNG"
    entries = report["entries"]
    assert [(e["arm"], e["depth"], e["seed"], e["weights"]) for e in entries] == [
        ("plain", 20, 0, "init"),
        ("plain", 20, 1, "init"),
        ("residual", 20, 0, "init"),
        ("residual", 20, 1, "init"),
    ]
    assert len(entries[0]["result"]["acf"]) == 5 and len(entries[0]["result"]["derivative"]) == 12
    assert entries[0]["result"]["derivative"] != entries[1]["result"]["derivative"]  # seeds
    for row in report["summary"]:
        lag1 = [e["result"]["lag1"] for e in entries if e["arm"] == row["arm"]]
        assert row["n"] == 2 and row["lag1_mean"] == pytest.approx(sum(lag1) / 2)
        assert row["lag1_std"] == pytest.approx(abs(lag1[0] - lag1[1]) / 2**0.5)


def test_gradients_of_an_experiment_trained_and_at_init_on_real_images(
    experiment, data, tmp_path, capsys
):
    args = [
        "analyze",
        "gradients",
        str(experiment),
        "--weights",
        "both",
        *_data_args(data),
        "--points",
        "8",
        "--max-lag",
        "3",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "plain-20" in printed and "trained" in printed and "init" in printed
    report = json.loads((tmp_path / "gradients.json").read_text())
    assert report["line"]["kind"] == "images"
    kinds = sorted((e["arm"], e["weights"]) for e in report["entries"])
    assert kinds == [
        ("plain", "init"),
        ("plain", "trained"),
        ("residual", "init"),
        ("residual", "trained"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "trained"], "--weights trained needs trained weights"),
        (["--arms", "wide"], "--arms: unknown wide"),
        (["resnet20", "--weights", "both"], "a model name has no trained weights"),
        (["resnet20", "--depths", "20"], "--arms and --depths go with an experiment folder"),
        (["resnet20", "--target", "10"], "--target 10: the model has 10 outputs"),
    ],
)
def test_gradients_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["analyze", "gradients", *args, "--points", "4", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("landscape", ("Li et al.", "filter", "landscape.json", "--hessian", "Hutchinson")),
        ("gradients", ("Balduzzi et al.", "autocorrelation", "gradients.json", "--depths")),
    ],
)
def test_help_reads_well(capsys, kind, words):
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", kind, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert [w for w in words if w not in text] == []


def test_the_experiment_page_makes_the_argument(experiment, data, tmp_path, capsys):
    folder = tmp_path / "exp"
    shutil.copytree(experiment, folder)
    assert main(["report", str(folder)]) == 0
    before = (folder / "report.html").read_text()
    assert before.count("Not measured yet") == 3  # lesions, landscapes, gradients: commands
    assert "He, Zhang, Ren and Sun" in before and "test (bold) error per epoch" in before
    run = folder / "runs" / "plain20-s0"
    assert (
        main(
            [
                "analyze",
                "blocks",
                str(run),
                *_data_args(data),
                "--limit",
                "8",
                "--probe-images",
                "0",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "analyze",
                "landscape",
                str(folder),
                *_data_args(data),
                "--limit",
                "8",
                "--steps",
                "3",
                "--hessian",
                "--hessian-images",
                "4",
                "--trace-samples",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "analyze",
                "gradients",
                "--depths",
                "20",
                "--seeds",
                "2",
                "--points",
                "8",
                "--max-lag",
                "3",
                "--out",
                str(folder / "gradients-init"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.html").read_text()
    assert "Not measured yet" not in text
    for words in (
        "Why residual connections work",
        "Veit, Wilber and Belongie",
        "Visualizing the Loss Landscape",
        "Shattered Gradients Problem",
        "top Hessian eigenvalues",
        "lag-1 correlation",
        "gradients-init",
    ):
        assert words in text, words
    assert text.count('<section id="figures">') == 0  # the curves moved into the argument
    with Browser(binary=require_browser(), width=1100, height=800) as browser:
        shown = browser.open(folder / "report.html")
    assert shown.problems() == []
    # degradation curves, lesions, landscape, gradients: all drawn and loaded
    assert len(shown.images) == 4 and all(i["naturalWidth"] > 300 for i in shown.images)
    # A broken analysis file costs its own figure, not the page.
    (folder / "gradients-init" / "gradients.json").write_text('{"entries": 3}')
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.html").read_text()
    assert "could not show this measurement" in text and "Visualizing the Loss" in text


def test_the_page_reads_analyses_only_inside_the_folder(tmp_path):
    """A landscape.json reached through a link out of the experiment folder (a linked
    sub-folder, or a linked file) is not read; a real sub-folder's is."""
    from reslab.analysis.report.why import find_analyses

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "landscape.json").write_text("{}")
    folder = tmp_path / "exp"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "landscape.json").write_text("{}")  # run folders are not searched
    (folder / "real").mkdir()
    (folder / "real" / "landscape.json").write_text("{}")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    (folder / "linked-file").mkdir()
    (folder / "linked-file" / "landscape.json").symlink_to(outside / "landscape.json")
    (folder / "fifo").mkdir()
    os.mkfifo(folder / "fifo" / "landscape.json")
    assert find_analyses(folder, "landscape.json") == [folder / "real" / "landscape.json"]
