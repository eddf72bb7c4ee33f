"""The run room's records as a careless or hostile user leaves them: damaged files are one line
naming the file (or, in a report, a note naming it), a report embeds only files inside its
folder, and an experiment reports only runs of its own recipe."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from reslab.cli import main
from reslab.runs import ExperimentFolder, RunFileError, read_history, read_metrics
from test_data_synthetic import write_fake_fashion_mnist


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=32)


def _experiment(data: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment", "degradation", "--data", "fashion-mnist", "--data-dir", str(data),
            "--depths", "20", "--arms", "plain", "--epochs", "1", "--bs", "16",
            "--train-limit", "32", "--train-eval", "16", "--threads", "1", "--no-progress",
            "--no-amp", "--no-report", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def experiment(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "exp"
    assert main(_experiment(data, out)) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


RUN = "runs/plain20-s0"


def test_a_rerun_without_the_recipe_file_checks_the_runs_against_the_new_recipe(
    data, experiment, tmp_path, capsys
):
    exp = _copy(experiment, tmp_path / "exp")
    (exp / "recipe.json").unlink()
    results = _digest(exp / "results.json")
    assert main(_experiment(data, exp, "--epochs", "2")) == 2
    _one_line(capsys, "plain20-s0", "another recipe", "epochs")
    assert _digest(exp / "results.json") == results
    assert not (exp / "recipe.json").exists()  # not relabelled with the refused recipe
    # The same recipe as the runs': accepted, nothing retrained, the recipe file rebuilt.
    assert main(_experiment(data, exp)) == 0
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert json.loads((exp / "recipe.json").read_text())["epochs"] == 1


def test_a_run_replaced_by_another_recipe_is_neither_skipped_nor_resumed(
    data, experiment, tmp_path, capsys
):
    exp = _copy(experiment, tmp_path / "exp")
    train = ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--model", "plain20",
             "--epochs", "1", "--bs", "16", "--lr", "0.05", "--no-progress", "--no-report",
             "--threads", "1", "--out", str(exp / RUN), "--overwrite"]  # fmt: skip
    assert main(train) == 0
    capsys.readouterr()
    assert main(_experiment(data, exp)) == 2  # finished by another recipe: not in the table
    _one_line(capsys, "plain20-s0", "another recipe")
    (exp / RUN / "metrics.json").unlink()  # now a partial run: not resumed under this label
    (exp / RUN / "model.safetensors").unlink()
    assert main(_experiment(data, exp)) == 2
    _one_line(capsys, "plain20-s0", "another recipe")


def test_an_experiment_holds_its_runs_locks(data, experiment, tmp_path, capsys):
    exp = _copy(experiment, tmp_path / "exp")
    before = _digest(exp / RUN / "model.safetensors")
    train = ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--model", "plain20",
             "--epochs", "1", "--bs", "16", "--no-progress", "--no-report", "--threads", "1",
             "--out", str(exp / RUN), "--overwrite"]  # fmt: skip
    with ExperimentFolder(exp, json.loads((exp / "recipe.json").read_text()), ["plain20-s0"]):
        assert main(train) == 2
        _one_line(capsys, "another reslab process")
    assert _digest(exp / RUN / "model.safetensors") == before


DAMAGED = [
    ("recipe.json", "[1, 2]", "expected a JSON object"),
    (f"{RUN}/metrics.json", "[]", "expected a JSON object"),
    (f"{RUN}/metrics.json", "{}", "no 'test_accuracy'"),
    (f"{RUN}/metrics.json", '{"test_accuracy": "high", "test_loss": 1}', "must be a number"),
    (f"{RUN}/history.json", "[]", "expected a JSON object"),
    (f"{RUN}/config.json", '{"data": 5}', "'data' must be a string"),
    (f"{RUN}/config.json", "{not json", "not valid JSON"),
]


@pytest.mark.parametrize("name, text, message", DAMAGED, ids=[f"{d[0]}={d[1]}" for d in DAMAGED])
def test_damaged_experiment_files_are_one_line_naming_them(
    name, text, message, data, experiment, tmp_path, capsys
):
    exp = _copy(experiment, tmp_path / "exp")
    (exp / name).write_text(text)
    assert main(_experiment(data, exp)) == 2
    _one_line(capsys, Path(name).name, message)


@pytest.mark.parametrize("name, text, message", DAMAGED[1:], ids=[d[0] + d[1] for d in DAMAGED[1:]])
def test_a_report_notes_damaged_run_files_by_name(name, text, message, experiment, tmp_path):
    run = _copy(experiment / RUN, tmp_path / "run")
    (run / Path(name).name).write_text(text)
    page = tmp_path / "page.html"
    assert main(["report", str(run), "--out", str(page), "--limit", "8", "--top-losses", "0"]) == 0
    html = page.read_text()
    assert "not shown" in html and Path(name).name in html
    assert message.replace("'", "&#x27;") in html  # the page escapes quotes


def test_the_readers_check_every_declared_field(experiment, tmp_path):
    run = _copy(experiment / RUN, tmp_path / "run")
    metrics = read_metrics(run)
    raw = json.loads((run / "metrics.json").read_text())
    assert metrics.test_accuracy == raw["test_accuracy"] and metrics.epochs == 1
    assert metrics.to_dict() == raw  # nothing lost on a round trip
    (run / "history.json").write_text('{"history": [{"epoch": 1}], "batch_lr": [1, "x"]}')
    with pytest.raises(RunFileError, match=r"history.json: 'batch_lr' must be a list of numbers"):
        read_history(run)


def _png(color: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (color, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_report_without_a_manifest_embeds_only_files_inside_the_folder(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "environ").write_text("SECRET_TOKEN=hunter2\n")
    (outside / "passwd.csv").write_text("user,SECRET_UID\n")
    (outside / "private.png").write_bytes(_png(200))
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "results.json").write_text('[{"model": "a", "accuracy": 0.5}]')
    (folder / "results.md").symlink_to(outside / "environ")
    (folder / "results.csv").symlink_to(outside / "passwd.csv")
    (folder / "leak.png").symlink_to(outside / "private.png")
    (folder / "own.png").write_bytes(_png(10))
    assert main(["report", str(folder), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "SECRET_TOKEN" not in html and "SECRET_UID" not in html
    assert base64.b64encode(_png(200)).decode() not in html
    assert base64.b64encode(_png(10)).decode() in html  # its own figure is shown
    assert html.count("not shown") == 3 and "links outside" in html


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("command.json", '{"invocations": 5}', "'invocations' must be a list"),
        ("command.json", '{"invocations": [{"argv": "x", "time": "t"}]}', "'argv' must be"),
        ("run.json", "[]", "expected a JSON object"),
        ("run.json", '{"format": "other", "version": 1}', "not a reslab run ledger"),
        ("run.json", '{"format": "reslab-run", "version": 1, "recipe": "x", "files": []}',
         "unknown recipe"),
    ],
)  # fmt: skip
def test_a_damaged_command_log_or_ledger_stops_a_resume_in_one_line(
    name, text, message, experiment, tmp_path, capsys
):
    run = _copy(experiment / RUN, tmp_path / "run")
    (run / "metrics.json").unlink()  # a run to resume: its checkpoint is there
    (run / name).write_text(text)
    assert main(["train", "--resume", str(run), "--no-progress", "--no-report"]) == 2
    _one_line(capsys, name, message)
