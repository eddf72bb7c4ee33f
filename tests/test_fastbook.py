"""fastbook ch. 14's networks equal the book's definitions (weights copied across), and
``reslab experiment fastbook`` writes its table and LR-finder figure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.cli import main
from reslab.recipes.fastbook import FastbookConfig, fastbook_runs, run_fastbook

REPO = Path(__file__).resolve().parents[1]


def conv_layer(ni, nf, stride=1, act=True, k=3):
    layers = [nn.Conv2d(ni, nf, k, stride, k // 2, bias=False), nn.BatchNorm2d(nf)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


class BookResBlock(nn.Module):
    """The chapter's ResBlock, written from the book: two ConvLayers, the second without
    activation; the identity path average-pools when striding and 1x1-convolves when the
    width changes; the sum goes through a ReLU."""

    def __init__(self, ni, nf, stride=1):
        super().__init__()
        self.convs = nn.Sequential(conv_layer(ni, nf, stride), conv_layer(nf, nf, act=False))
        self.idconv = nn.Identity() if ni == nf else conv_layer(ni, nf, 1, act=False, k=1)
        self.pool = nn.Identity() if stride == 1 else nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x):
        return torch.relu(self.convs(x) + self.idconv(self.pool(x)))


def book_model(name):
    widths = (3, 16, 32, 64, 128, 256)
    pairs = list(zip(widths[:-1], widths[1:]))
    if name == "fastbook_plain_cnn":
        body = [conv_layer(ni, nf, 2) for ni, nf in pairs]
    elif name == "fastbook_resblocks":
        body = [BookResBlock(ni, nf, 2) for ni, nf in pairs]
    else:
        body = [nn.Sequential(BookResBlock(ni, nf, 2), BookResBlock(nf, nf)) for ni, nf in pairs]
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10))


def _copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters and buffers by position: both nets create them in the same order
    (conv, BN; branch before shortcut)."""
    ours = [t for m in src.modules() for t in (*m.parameters(False), *m.buffers(False))]
    theirs = [t for m in dst.modules() for t in (*m.parameters(False), *m.buffers(False))]
    assert [t.shape for t in ours] == [t.shape for t in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.copy_(a)


@pytest.mark.parametrize(
    "name", ["fastbook_plain_cnn", "fastbook_resblocks", "fastbook_resblocks_x2"]
)
def test_the_networks_compute_what_the_book_defines(name):
    ours = randomize_bn(reslab.create_model(name, normalize=False)).eval()
    book = book_model(name).eval()
    _copy_in_order(ours, book)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), book(x), rtol=1e-5, atol=1e-5)


def _nette(root: Path) -> Path:
    """A two-class image folder (reddish vs bluish noise) with train/ and val/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for c, color in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.array(color) + rng.integers(0, 50, (64, 72, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture
def nette(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    return _nette(tmp_path / "nette")


def test_the_cpu_budget_writes_its_table_and_figure(nette, tmp_path, capsys):
    out = tmp_path / "exp"
    code = main(["experiment", "fastbook", "--data", str(nette), "--steps", "1,2",
                 "--epochs", "1", "--bs", "4", "--threads", "1", "--no-progress",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == ["fastbook_plain_cnn", "fastbook_resblocks"]
    for r in results["runs"]:
        run_dir = out / "runs" / f"{r['step']}-{r['model']}-s0"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert r["accuracy"] == metrics["test_accuracy"] and r["parameters"] > 0
        assert r["lr"] == json.loads((run_dir / "lr_find.json").read_text())["suggestion"]
    # The trained net's own count: 395,674 with the book's 10-way head, Linear(256, 10) (2,570
    # parameters); this data has 2 classes, Linear(256, 2) (514): 395,674 - 2,570 + 514.
    assert "| 1 | fastbook_plain_cnn | 64 | 1 | 393,618 |" in (out / "results.md").read_text()
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"


def test_the_book_budget_is_the_chapters_recipe():
    runs = fastbook_runs(FastbookConfig(budget="book", seeds=3))
    assert [r.name for r in runs[:4]] == [
        "1-fastbook_plain_cnn-s0",
        "2-fastbook_resblocks-s0",
        "3-fastbook_resblocks_x2-s0",
        "4-xresnet18-s0",
    ]
    assert [r.labels["seed"] for r in runs] == [0] * 4 + [1] * 4 + [2] * 4
    for run in runs:
        c = run.config
        # fastbook ch. 14: Resize(160), aug_transforms(min_scale=0.5, size=128), bs 128,
        # fit_one_cycle(5, 3e-3); fastai's Adam (0.9, 0.99, eps 1e-5, wd 0.01) and one-cycle
        # (div 25, div_final 1e5, pct_start 0.25); nn.CrossEntropyLoss().
        assert (c.size, c.presize, c.epochs, c.bs, c.lr) == (128, 160, 5, 128, 3e-3)
        assert (c.opt, c.momentum, c.beta2, c.eps, c.wd) == ("adamw", 0.9, 0.99, 1e-5, 0.01)
        assert (c.schedule, c.pct_start, c.div_final) == ("one-cycle", 0.25, 1e5)
        assert (c.min_scale, c.square_crops, c.label_smoothing) == (0.5, True, 0.0)
        assert c.cache_images and not c.lr_find and c.data == "imagenette"
    # Step 5: ResNet-50, Resize(320) then 224 px crops, fit_one_cycle(20, 3e-3).
    for cfg in (FastbookConfig(budget="book", steps=[5]), FastbookConfig(budget="book-r50")):
        (run,) = fastbook_runs(cfg)
        c = run.config
        assert (run.name, c.size, c.presize, c.epochs, c.lr) == ("5-xresnet50-s0", 224, 320, 20,
                                                                3e-3)  # fmt: skip
    with pytest.raises(ValueError, match="has 4 models"):
        FastbookConfig(budget="cpu", steps=[5])


def test_the_book_budget_trains_with_fastais_adam_and_one_cycle(nette, tmp_path, monkeypatch):
    from reslab.training import Learner

    seen = {}
    real = Learner.fit_one_cycle

    def spy(self, n_epoch, max_lr=None, **kwargs):
        real(self, n_epoch, max_lr, **kwargs)
        seen.update(kwargs, max_lr=max_lr, groups=self.opt.param_groups, loaders=(
            type(self.train_dl).__name__, type(self.valid_dl).__name__))  # fmt: skip

    monkeypatch.setattr(Learner, "fit_one_cycle", spy)
    cfg = FastbookConfig(data=str(nette), budget="book", steps=[1], epochs=1, bs=8, threads=1,
                         progress=False, out=str(tmp_path / "exp"))  # fmt: skip
    run_fastbook(cfg)
    assert seen["max_lr"] == 3e-3 and seen["div_final"] == 1e5 and seen["pct_start"] == 0.25
    assert seen["loaders"] == ("DecodedLoader", "DecodedLoader")
    for group in seen["groups"]:
        assert group["betas"][1] == 0.99 and group["eps"] == 1e-5
        # the last step's LR: max_lr / 25 / 1e5, cosine-annealed to it
        assert group["lr"] == pytest.approx(3e-3 / 25 / 1e5, rel=1e-6)
    assert sorted(g["weight_decay"] for g in seen["groups"]) == [0.0, 0.01]


def test_seeds_give_mean_and_std_next_to_the_books_number(nette, tmp_path, capsys):
    out = tmp_path / "exp"

    def run(seeds: str) -> int:
        return main(["experiment", "fastbook", "--data", str(nette), "--budget", "book",
                     "--steps", "1,2", "--seeds", seeds, "--epochs", "1", "--bs", "8",
                     "--threads", "1", "--no-progress", "--no-report",
                     "--out", str(out)])  # fmt: skip

    assert run("1") == 0, capsys.readouterr().err
    capsys.readouterr()
    assert run("2") == 0, capsys.readouterr().err  # a second seed joins the same folder
    lines = capsys.readouterr().out.splitlines()
    assert "1-fastbook_plain_cnn-s0: finished earlier, skipped" in lines[0]
    assert "1-fastbook_plain_cnn-s1: training" in lines[2]
    results = json.loads((out / "results.json").read_text())
    for step, model, book in ((1, "fastbook_plain_cnn", 65.9), (2, "fastbook_resblocks", 66.8)):
        acc = [json.loads((out / "runs" / f"{step}-{model}-s{s}" / "metrics.json").read_text())
               ["test_accuracy"] for s in (0, 1)]  # fmt: skip
        (row,) = [r for r in results["summary"] if r["step"] == step]
        assert row["n"] == 2 and row["book"] == book
        assert row["accuracy_mean"] == pytest.approx(sum(acc) / 2)
        assert row["accuracy_std"] == pytest.approx(abs(acc[0] - acc[1]) / 2**0.5)
        text = (out / "results.md").read_text()
        assert f"| {step} | {model} | 128 (from 160) | 1 |" in text and f"| {book} |" in text
    assert "## How this run differs from the book" in text
    assert not (out / "lr_find.png").exists()  # the book budget runs no LR finder
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from reslab.cli import main
    from reslab.training import SaveCheckpoint

    saves, real = [0], SaveCheckpoint.after_epoch
    def after_epoch(self):
        real(self)
        saves[0] += 1
        if saves[0] == 3:  # the second model's first epoch is saved: die mid-experiment
            os.kill(os.getpid(), signal.SIGKILL)
    SaveCheckpoint.after_epoch = after_epoch
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_killed_book_experiment_resumes_to_the_uninterrupted_result(nette, tmp_path):
    def args(out):
        return ["experiment", "fastbook", "--data", str(nette), "--budget", "book",
                "--steps", "1,2", "--epochs", "2", "--bs", "8", "--threads", "1",
                "--no-progress", "--no-report", "--out", str(out)]  # fmt: skip

    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"}
    killed_out, whole_out = tmp_path / "killed", tmp_path / "whole"
    killed = subprocess.run([sys.executable, "-c", KILLER, *args(killed_out)], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    first, second = "1-fastbook_plain_cnn-s0", "2-fastbook_resblocks-s0"
    assert (killed_out / "runs" / first / "metrics.json").is_file()
    assert not (killed_out / "runs" / second / "metrics.json").exists()
    again = subprocess.run([sys.executable, "-m", "reslab", *args(killed_out)], env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    lines = again.stdout.splitlines()
    assert f"{first}: finished earlier, skipped" in lines[0]
    assert f"{second}: resuming from its last checkpoint" in lines[1]
    history = json.loads((killed_out / "runs" / second / "history.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert main(args(whole_out)) == 0
    resumed = load_file(str(killed_out / "runs" / second / "model.safetensors"))
    whole = load_file(str(whole_out / "runs" / second / "model.safetensors"))
    assert resumed.keys() == whole.keys()
    for key in whole:  # the resumed run is the uninterrupted one, bit for bit
        assert torch.equal(resumed[key], whole[key]), key


def test_results_say_which_link_of_the_ordering_breaks():
    from reslab.recipes.fastbook_results import results_markdown, summarize

    def results(accs):
        runs = [{"step": i + 1, "model": f"m{i + 1}", "size": 128, "presize": 160, "epochs": 5,
                 "parameters": 10, "accuracy": a, "seconds": 1.0, "seed": 0, "lr": 3e-3,
                 "amp": "bf16", "lr_find": None} for i, a in enumerate(accs)]  # fmt: skip
        return {"data": "imagenette", "data_folder": "/x/imagenette2-224sq-0123456789abcdef",
                "recipe": {"budget": "book", "bs": 128, "lr": 3e-3}, "runs": runs,
                "summary": summarize(runs)}  # fmt: skip

    ok = results_markdown(results([0.60, 0.62, 0.65, 0.70]))
    assert (
        "(book: 65.9 < 66.8 < 69.3 < 75.7), holds for the means here: 60.0, 62.0, 65.0, 70.0" in ok
    )
    bad = results_markdown(results([0.68, 0.65, 0.69, 0.77]))
    assert "does **not** hold (plain CNN 68.0 vs ResBlocks 65.0) for the means here" in bad
    assert "Data: `imagenette2-224sq`, a copy of Imagenette whose images were squashed" in bad
