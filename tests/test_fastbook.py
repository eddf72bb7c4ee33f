"""fastbook ch. 14's networks equal the book's definitions (weights copied across), and
``reslab experiment fastbook`` writes its table and LR-finder figure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.cli import main


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


def test_the_experiment_writes_its_table_and_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for c, color in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = tmp_path / "nette" / split / f"n0{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.array(color) + rng.integers(0, 50, (64, 64, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "exp"
    code = main(["experiment", "fastbook", "--data", str(tmp_path / "nette"), "--steps", "1,2",
                 "--epochs", "1", "--bs", "4", "--threads", "1", "--no-progress",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["runs"]] == ["fastbook_plain_cnn", "fastbook_resblocks"]
    for r in results["runs"]:
        metrics = json.loads(
            (out / "runs" / f"{r['step']}-{r['model']}" / "metrics.json").read_text()
        )
        assert r["accuracy"] == metrics["test_accuracy"] and r["parameters"] > 0
        assert (
            r["lr"]
            == json.loads(
                (out / "runs" / f"{r['step']}-{r['model']}" / "lr_find.json").read_text()
            )["suggestion"]
        )
    # The trained net's own count: 395,674 with the book's 10-way head, Linear(256, 10) (2,570
    # parameters); this data has 2 classes, Linear(256, 2) (514): 395,674 - 2,570 + 514.
    assert "| 1 | fastbook_plain_cnn | 64 | 1 | 393,618 |" in (out / "results.md").read_text()
    assert (out / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
