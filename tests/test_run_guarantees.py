"""What a user had is never lost: the cases of the run-folder review (docs/reliability.md).

- ``--overwrite`` checks every input first and leaves the old run whole when one is wrong;
  it refuses a folder that reslab did not record as a run and removes only what reslab wrote;
- an output that is, or resolves to, a file the command reads (a run folder's own files
  included) is refused before any work, and so is a target that is not a regular file;
- a run folder's ``.lock`` that is a link is refused, its target untouched.

Every test digests the files before and compares after: a refusal that still changed a byte
fails.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=32)


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--width", "0.25",
            "--epochs", "1", "--bs", "16", "--no-progress", "--threads", "1", "--no-report",
            "--out", str(out), *extra]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (links as their target text), digested; the single-writer
    lock (it holds the last writer's pid) aside."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.name == ".lock" and not path.is_symlink():
            continue
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = "link:" + os.readlink(path)
        elif path.is_file():
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[key] = "dir"
    return out


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished training run (module-wide; tests copy it before changing anything)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_train(data, out)) == 0
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and path.name != ".lock":
            (dst / path.name).write_bytes(path.read_bytes())
    return dst


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


TYPOS = [
    (["--data", "fashoin-mnist"], "unknown data set"),
    (["--model", "resnet2O"], "resnet2O"),
    (["--classes", "Trouser,Bagg"], "Bagg"),
    (["--size", "40"], "--size 40"),
    (["--lr", "-1"], "--lr"),
]


@pytest.mark.parametrize("change, message", TYPOS, ids=[t[0][0] for t in TYPOS])
def test_overwrite_with_a_bad_option_leaves_the_old_run_whole(
    change, message, data, finished, tmp_path, capsys
):
    run = _copy_run(finished, tmp_path / "run")
    before = _snapshot(run)
    argv = [*_train(data, run, "--overwrite"), *change]  # the last of a repeated flag wins
    try:
        code = main(argv)
    except SystemExit as exc:  # a value argparse refuses: usage error, exit 2
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert _snapshot(run) == before


def test_finetune_overwrite_with_an_unknown_weights_tag_leaves_the_old_run_whole(
    data, finished, tmp_path, capsys
):
    out = tmp_path / "tuned"
    args = ["finetune", "--data", "fashion-mnist", "--data-dir", str(data), "--epochs", "1",
            "--bs", "16", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main([*args, "--from", str(finished)]) == 0
    before = _snapshot(out)
    assert main([*args, "--from", "resnet20@NOSUCHTAG", "--overwrite"]) == 2
    _one_line(capsys, "NOSUCHTAG")
    assert _snapshot(out) == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(data, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "tensorboard" / "old").mkdir(parents=True)
    (project / "config.json").write_text('{"mine": true}')
    (project / "report.html").write_text("<p>my report</p>")
    (project / "tensorboard" / "old" / "events.out.tfevents.1").write_text("x")
    (project / "notes.txt").write_text("notes")
    before = _snapshot(project)
    assert main(_train(data, project, "--overwrite")) == 2
    _one_line(capsys, "not a reslab run folder")
    assert _snapshot(project) == before


def test_overwrite_removes_only_what_reslab_wrote(data, finished, tmp_path):
    run = _copy_run(finished, tmp_path / "run")
    # the user's own files beside the run, one of them named like a run file reslab did not
    # write in this run (no --lr-find: no lr_find.json in the ledger)
    (run / "lr_find.json").write_text('{"mine": true}')
    (run / "notes.md").write_text("my notes")
    ledger = json.loads((run / "run.json").read_text())
    assert "lr_find.json" not in ledger["files"] and "model.safetensors" in ledger["files"]
    assert main(_train(data, run, "--overwrite", "--seed", "5")) == 0
    assert (run / "lr_find.json").read_text() == '{"mine": true}'
    assert (run / "notes.md").read_text() == "my notes"
    assert json.loads((run / "config.json").read_text())["seed"] == 5


def test_a_ledger_that_names_a_path_outside_the_folder_is_refused(data, finished, tmp_path, capsys):
    run = _copy_run(finished, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    ledger = json.loads((run / "run.json").read_text())
    ledger["files"].append("../victim.txt")
    (run / "run.json").write_text(json.dumps(ledger))
    assert main(_train(data, run, "--overwrite")) == 2
    _one_line(capsys, "run.json", "not a file name of this folder")
    assert victim.read_text() == "keep"


RUN_INPUTS = [
    (["eval", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}", "--out", "{run}/{f}"],
     "model.safetensors"),
    (["eval", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}", "--out", "{run}/{f}"],
     "checkpoint.safetensors"),
    (["export", "{run}", "--format", "torchscript", "--out", "{run}/{f}"], "model.safetensors"),
    (["export", "{run}", "--format", "torchscript", "--out", "{run}/{f}"], "config.json"),
    (["report", "{run}", "--out", "{run}/{f}"], "config.json"),
    (["report", "{run}", "--out", "{run}/{f}"], "history.json"),
    (["plot", "history", "{run}", "--out", "{run}/{f}"], "history.json"),
    (["plot", "lr", "{run}", "--out", "{run}/{f}"], "metrics.json"),
    (["analyze", "blocks", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}", "--out",
      "{run}/{f}"], None),
]  # fmt: skip


@pytest.mark.parametrize("command, target", RUN_INPUTS, ids=lambda v: str(v)[:40])
def test_an_output_onto_a_file_of_the_input_run_is_refused(
    command, target, data, finished, tmp_path, capsys
):
    run = _copy_run(finished, tmp_path / "run")
    if target is None:  # analyze blocks writes into a folder: make its file a link to the model
        (tmp_path / "blocks").mkdir()
        (tmp_path / "blocks" / "blocks.json").symlink_to(run / "model.safetensors")
        command = [*command[:-1], str(tmp_path / "blocks")]
    before = _snapshot(run)
    argv = [a.format(run=run, data=data, f=target) for a in command]
    assert main(argv) == 2
    _one_line(capsys, "is an input of this command")
    assert _snapshot(run) == before


ANALYSES = [
    (["analyze", "landscape", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}",
      "--limit", "4", "--steps", "3"], "landscape.json"),
    (["analyze", "landscape", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}",
      "--limit", "4", "--steps", "3"], "landscape.png"),
    (["analyze", "gradients", "{run}", "--points", "8"], "gradients.json"),
    (["analyze", "explanations", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}",
      "--images", "2"], "explanations.json"),
    (["analyze", "explanations", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}",
      "--images", "2"], "explanations-cascade.png"),
]  # fmt: skip


@pytest.mark.parametrize("command, name", ANALYSES, ids=lambda v: str(v)[:40])
def test_an_analysis_output_linked_to_a_file_of_the_input_run_is_refused(
    command, name, data, finished, tmp_path, capsys
):
    """The analyses write a fixed file name into --out; where that name is a link to one of the
    input run's records, the command stops before any work and the run is unchanged."""
    run = _copy_run(finished, tmp_path / "run")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(run / "model.safetensors")
    before = _snapshot(run)
    argv = [a.format(run=run, data=data) for a in command] + ["--out", str(out)]
    assert main(argv) == 2
    _one_line(capsys, "is an input of this command")
    assert _snapshot(run) == before and (out / name).is_symlink()


def test_an_output_linked_to_an_input_is_refused(finished, tmp_path, capsys):
    run = _copy_run(finished, tmp_path / "run")
    link = tmp_path / "elsewhere.pt"
    link.symlink_to(run / "model.safetensors")
    before = _snapshot(run)
    assert main(["export", str(run), "--format", "torchscript", "--out", str(link)]) == 2
    _one_line(capsys, "is an input of this command")
    assert _snapshot(run) == before and link.is_symlink()


NOT_FILES = [
    ["eval", "{run}", "--data", "fashion-mnist", "--data-dir", "{data}", "--out", "{target}"],
    ["export", "{run}", "--format", "torchscript", "--out", "{target}"],
    ["report", "{run}", "--out", "{target}"],
    ["plot", "history", "{run}", "--out", "{target}"],
]


@pytest.mark.parametrize("kind", ["fifo", "link-to-device", "socket"])
@pytest.mark.parametrize("command", NOT_FILES, ids=lambda c: " ".join(c[:2]))
def test_a_target_that_is_not_a_regular_file_is_refused(
    kind, command, data, finished, tmp_path, capsys
):
    target = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link-to-device":
        target.symlink_to("/dev/null")
    else:
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    argv = [a.format(run=finished, data=data, target=target) for a in command]
    assert main(argv) == 2
    _one_line(capsys, "not a regular file")
    assert not target.is_file() and (target.is_symlink() or target.exists())


def test_the_atomic_writer_never_replaces_a_device(tmp_path):
    from reslab.files import NotAFileError, atomic_write_text

    target = tmp_path / "fifo"
    os.mkfifo(target)
    with pytest.raises(NotAFileError, match="a FIFO"):
        atomic_write_text(target, "x")
    assert not target.is_file() and target.exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "victim")
    (tmp_path / "victim").write_text("keep")
    atomic_write_text(link, "new")  # the link is replaced, never written through
    assert (tmp_path / "victim").read_text() == "keep" and link.read_text() == "new"
    assert not link.is_symlink()


def test_a_lock_that_is_a_link_is_refused_and_its_target_kept(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me")
    (run / ".lock").symlink_to(victim)
    assert main(_train(data, run)) == 2
    _one_line(capsys, ".lock", "link")
    assert victim.read_text() == "do not truncate me"
