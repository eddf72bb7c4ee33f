"""Run folders have one writer and are never clobbered: a second concurrent writer is refused
(real processes), a finished run is not overwritten without ``--overwrite`` (which removes the
run's own files only), and temporary files of killed writes are swept when a run reopens."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=32)


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--width", "0.25",
            "--epochs", "1", "--bs", "16", "--no-progress", "--threads", "1", "--out", str(out),
            *extra]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + str(REPO / "tests")
    return env


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# A first writer that holds its run folder for a while (it sleeps in ``before_fit``, after the
# folder is locked and config.json is written), so a second writer arrives mid-run.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from reslab.recipes import TrainConfig, run_training
    from reslab.training import Callback

    data, out, marker = sys.argv[1:4]

    class Hold(Callback):
        def before_fit(self):
            Path(marker).touch()
            time.sleep(6)

    cfg = TrainConfig(data="fashion-mnist", data_dir=data, out=out, width=0.25, epochs=1,
                      bs=16, progress=False, threads=1, seed=1)
    run_training(cfg, extra_cbs=(Hold(),))
    """
)


def test_a_second_concurrent_writer_is_refused_and_changes_nothing(data, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "started"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), str(out), str(marker)],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first writer never started"
            time.sleep(0.1)
        config_before = _digest(out / "config.json")
        second = subprocess.run(
            [sys.executable, "-m", "reslab", *_args(data, out, "--seed", "2")],
            env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another reslab process" in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert _digest(out / "config.json") == config_before
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    # The folder holds the first run alone: its config and a model that goes with it.
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1


def test_a_finished_run_is_not_overwritten_without_asking(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(data, out)) == 0
    model = _digest(out / "model.safetensors")
    assert main(_args(data, out, "--seed", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    assert _digest(out / "model.safetensors") == model
    # --overwrite replaces the run's own files and leaves anything else alone.
    (out / "my-notes.txt").write_text("keep me")
    (out / ".model.safetensors.0badc0de.tmp").write_bytes(b"half a file")
    (out / ".my-editor.tmp").write_text("the user's own hidden file")
    assert main(_args(data, out, "--seed", "3", "--overwrite")) == 0
    assert _digest(out / "model.safetensors") != model
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert not (out / ".model.safetensors.0badc0de.tmp").exists()  # swept: named as ours
    assert (out / ".my-editor.tmp").read_text() == "the user's own hidden file"


def test_finetune_refuses_a_used_folder_too(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(data, run)) == 0
    out = tmp_path / "tuned"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"someone else's")
    args = ["finetune", "--from", str(run), "--data", "fashion-mnist", "--data-dir", str(data),
            "--epochs", "1", "--bs", "16", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    # Not a run reslab recorded: neither --resume nor --overwrite is offered, and
    # --overwrite refuses it, leaving the file alone.
    assert "files reslab did not record" in err and "--resume" not in err
    assert "--overwrite" not in err
    assert main([*args, "--overwrite"]) == 2
    assert "not a reslab run folder" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == b"someone else's"
    (out / "model.safetensors").unlink()
    assert main(args) == 0  # an empty folder is a new run's
    assert main([*args, "--overwrite", "--seed", "2"]) == 0  # and then its own to replace


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.write_text("x"), "is a file, not a folder"),
        (lambda p: p.parent.joinpath("file").write_text("x"), "is a file, not a folder"),
    ],
    ids=["out-is-a-file", "out-under-a-file"],
)
def test_bad_output_folders_are_one_line_before_any_loading(setup, message, tmp_path, capsys):
    target = tmp_path / "out"
    setup(target)
    if not target.exists():
        target = tmp_path / "file" / "run"
    # No data exists at all: the output check must come first.
    code = main(["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path), "--out",
                 str(target)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code = main(["train", "--data", "fashion-mnist", "--out", str(ro / "run")])
    finally:
        ro.chmod(0o700)
    assert code == 2 and "permission denied" in capsys.readouterr().err
