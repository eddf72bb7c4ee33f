"""``reslab experiment degradation`` on a tiny budget: the files it writes, skipping finished
runs, resuming a killed experiment (a real SIGKILL), refusing a changed recipe; and the Dirac
initialisation of the plain-dirac arm."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import reslab
from reslab.cli import main
from reslab.models.blocks import dirac_init_
from reslab.recipes.degradation import DegradationConfig, degradation_runs
from test_data_synthetic import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=32)


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["experiment", "degradation", "--data", "fashion-mnist", "--data-dir", str(data),
            "--depths", "20,32", "--arms", "plain,residual", "--epochs", "2", "--bs", "16",
            "--train-limit", "48", "--train-eval", "24", "--threads", "1", "--no-progress",
            "--no-amp", "--out", str(out), *extra]  # fmt: skip


# --no-amp: the tests recompute errors in float32; under bf16 autocast (the default where it is
# native) one image of a tiny untrained net can fall the other way.


@pytest.fixture(scope="module")
def experiment(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    assert main(_args(data, out)) == 0
    return out


def test_results_files_follow_the_runs_histories(experiment):
    results = json.loads((experiment / "results.json").read_text())
    assert results["data"] == "fashion-mnist" and results["recipe"]["epochs"] == 2
    assert {(r["arm"], r["depth"], r["seed"]) for r in results["runs"]} == {
        ("plain", 20, 0), ("plain", 32, 0), ("residual", 20, 0), ("residual", 32, 0)}  # fmt: skip
    for run in results["runs"]:
        folder = experiment / "runs" / f"{run['arm']}{run['depth']}-s0"
        history = json.loads((folder / "history.json").read_text())["history"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert [r["epoch"] for r in run["history"]] == [1, 2]
        for mine, theirs in zip(run["history"], history):
            assert mine["train_error"] == pytest.approx(1 - theirs["train_eval_accuracy"])
            assert mine["running_train_error"] == pytest.approx(1 - theirs["train_accuracy"])
            assert mine["test_error"] == pytest.approx(1 - theirs["accuracy"])
        assert run["final_test_error"] == pytest.approx(1 - metrics["test_accuracy"])
        assert run["final_train_error"] == run["history"][-1]["train_error"]
        assert json.loads((folder / "config.json").read_text())["model"] == (
            f"{'plain' if run['arm'] == 'plain' else 'resnet'}{run['depth']}")  # fmt: skip
    summary = {(s["arm"], s["depth"]): s for s in results["summary"]}
    run = next(r for r in results["runs"] if (r["arm"], r["depth"]) == ("plain", 32))
    assert summary["plain", 32]["train_error_mean"] == run["final_train_error"]
    assert summary["plain", 32]["train_error_std"] == 0.0 and summary["plain", 32]["n"] == 1
    text = (experiment / "results.md").read_text()
    assert "| plain | 32 |" in text and "8.75" in text and "akamaster" in text
    assert (experiment / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((experiment / "experiment.json").read_text())  # for reslab report
    assert manifest["figures"][0]["file"] == "degradation.png"
    assert manifest["tables"][0]["file"] == "results.md" and manifest["title"]
    html = (experiment / "report.html").read_text()  # written by the command by default
    assert "data:image/png;base64," in html and manifest["title"] in html and "<script" not in html


def test_the_clean_training_error_is_measured_in_eval_mode_on_a_fixed_subset(experiment, data):
    """Recompute the last epoch's clean training error from the saved model, independently."""
    from reslab.data import load_dataset

    folder = experiment / "runs" / "residual20-s0"
    model = reslab.load_checkpoint(folder / "model.safetensors").eval()
    train = load_dataset("fashion-mnist", "train", data_dir=data)
    g = torch.Generator().manual_seed(0)
    subset = torch.randperm(len(train), generator=g)[:48].sort().values  # --train-limit
    g = torch.Generator().manual_seed(1)
    measured = subset[torch.randperm(48, generator=g)[:24].sort().values]  # --train-eval
    with torch.no_grad():
        logits = model(train.images[measured].float() / 255)
    error = 1 - (logits.argmax(1) == train.labels[measured]).float().mean().item()
    results = json.loads((experiment / "results.json").read_text())
    run = next(r for r in results["runs"] if (r["arm"], r["depth"]) == ("residual", 20))
    assert run["final_train_error"] == pytest.approx(error)


def test_rerunning_skips_finished_runs_and_a_changed_recipe_is_refused(experiment, data, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in experiment.glob("runs/*/model.safetensors")}
    assert main(_args(data, experiment)) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert main(_args(data, experiment, "--lr", "0.05")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another recipe (changed: lr)" in err[0]


def test_runs_written_before_an_option_existed_still_match(experiment, data, tmp_path, capsys):
    """A run folder whose config.json lacks an option added later (here beta2 and min_scale,
    at their defaults) is the same recipe; the same option stored with another value is not."""
    folder = tmp_path / "exp"
    shutil.copytree(experiment, folder)
    for config in folder.glob("runs/*/config.json"):
        saved = json.loads(config.read_text())
        assert saved["beta2"] == 0.999 and saved["min_scale"] == 0.35  # the defaults
        del saved["beta2"], saved["min_scale"]
        config.write_text(json.dumps(saved))
    assert main(_args(data, folder)) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    config = next(folder.glob("runs/*/config.json"))
    config.write_text(json.dumps({**json.loads(config.read_text()), "beta2": 0.99}))
    assert main(_args(data, folder)) == 2
    assert "beta2" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--depths", "20,20"), ("--arms", "plain,plain")])
def test_a_repeated_depth_or_arm_is_refused(data, tmp_path, capsys, flag, value):
    # Both would name the same run folder and count its run twice in the summary.
    assert main(_args(data, tmp_path / "exp", flag, value)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "given more than once" in err[0]


def test_a_refused_option_leaves_no_recipe_behind(data, tmp_path, capsys):
    # A warm-up needs the step schedule; the short budget's is one-cycle. The refusal must come
    # before recipe.json is written, or the corrected command would be refused as a change.
    out = tmp_path / "exp"
    bad = _args(data, out, "--depths", "110", "--warmup-epochs", "1")
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--schedule step" in err[0]
    assert not (out / "recipe.json").exists()


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reslab.cli import main
    from reslab.training import SaveCheckpoint

    saves, real = [0], SaveCheckpoint.after_epoch
    def after_epoch(self):
        real(self)
        saves[0] += 1
        if saves[0] == 3:  # the second run's first epoch is saved: die mid-experiment
            os.kill(os.getpid(), signal.SIGKILL)
    SaveCheckpoint.after_epoch = after_epoch
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_killed_experiment_resumes_where_it_stopped(data, tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"}
    killed = subprocess.run([sys.executable, "-c", KILLER, *_args(data, out)], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (out / "runs" / "plain20-s0" / "metrics.json").is_file()  # finished before the kill
    assert not (out / "runs" / "plain32-s0" / "metrics.json").exists()  # killed in epoch 2
    again = subprocess.run([sys.executable, "-m", "reslab", *_args(data, out)], env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    lines = again.stdout.splitlines()
    assert "plain20-s0: finished earlier, skipped" in lines[0]
    assert "plain32-s0: resuming from its last checkpoint" in lines[1]
    resumed = out / "runs" / "plain32-s0"
    assert json.loads((resumed / "metrics.json").read_text())["resumed"] is True
    history = json.loads((resumed / "history.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]  # the saved epoch was not trained again
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


def test_dirac_init_makes_a_plain_block_the_identity_in_eval_mode():
    block = reslab.create_model("plain20", init="dirac").layer1[1].eval()
    x = torch.rand(2, 16, 8, 8)  # non-negative, as a block's input after a ReLU is
    with torch.no_grad():
        for conv in (block.conv1, block.conv2):
            dirac_init_(conv.weight, noise=0.0)
        bn_gain = (1 + block.bn1.eps) ** -1  # two eval-mode BNs at mean 0, var 1
        torch.testing.assert_close(block(x), x * bn_gain, rtol=1e-6, atol=1e-6)
    # With the small noise the arm uses, it stays close to the identity (about 1 % here).
    noisy = reslab.create_model("plain20", init="dirac").layer1[1].eval()
    with torch.no_grad():
        rel = ((noisy(x) - x).norm() / x.norm()).item()
    assert 0 < rel < 0.05


def test_the_paper_budget_is_the_papers_protocol_and_warms_up_only_resnet110():
    # He et al. 2015, section 4.2: batch 128, LR 0.1 / 10 at 32k and 48k of 64k iterations
    # (epochs 82, 123, 164 of 391 iterations), wd 1e-4, momentum 0.9, all 50k images, and 0.01
    # for about 400 iterations first for the 110-layer nets only.
    cfg = DegradationConfig(budget="paper", depths=[20, 110], arms=["plain", "residual"])
    runs = {run.name: run.config for run in degradation_runs(cfg)}
    assert sorted(runs) == ["plain110-s0", "plain20-s0", "residual110-s0", "residual20-s0"]
    for name, config in runs.items():
        assert (config.epochs, config.bs, config.lr, config.schedule) == (164, 128, 0.1, "step")
        assert (config.milestones, config.wd, config.momentum) == ([82, 123], 1e-4, 0.9)
        assert config.train_limit is None and config.amp is False
        assert config.warmup_epochs == (1 if "110" in name else 0)


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["experiment", "degradation", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--depths", "--arms", "--seeds", "--budget", "--epochs", "--train-limit", "--out"):
        assert flag in text
