"""CIFAR-10 with a plain PyTorch loop that shares no code with reslab: the reference for
`reslab train --data cifar10` on the same recipe and the same images.

Why: reslab's ResNet-20 reached 87.5 % with the paper's schedule where the paper reports
91.25 % (BENCHMARKS.md). If a textbook implementation — its own ResNet-20 (option A
shortcuts), per-image pad-crop-flip written as a Python loop, torch's OneCycleLR — lands where
reslab lands on the JPEG copy, the gap is the data or the recipe, not reslab.

Recipe (= ``reslab train --data cifar10 --model resnet20 --epochs E --bs 256 --lr 0.4
--label-smoothing 0.1 --amp``): SGD Nesterov, weight decay 5e-4 on conv/linear weights only,
one-cycle (25 % warm-up, div 25, final div 1e4, momentum 0.95→0.85→0.95), label smoothing
0.1, bf16 autocast, channels-last, 4-pixel zero pad + random 32 crop + horizontal flip.
Data: the JPEG class folders (``cifar10-jpg/{train,test}/<class>/*.jpg``), decoded with PIL.

Hardware/versions printed with the result; one run (seed 0).

    flock /tmp/reslab-heavy.lock python3 benchmarks/cifar_reference_loop.py --epochs 25 \\
        --root ~/.cache/reslab/cifar10-jpg
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted((root / split / name).iterdir()):
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin  # option A: subsample and zero-pad the channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short)


class ResNet20(nn.Module):
    def __init__(self, n: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(n):
                blocks.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def augment(batch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    padded = F.pad(batch, (4, 4, 4, 4))
    out = torch.empty_like(batch)
    for i in range(len(batch)):  # per-image, deliberately the plain way
        dy, dx = torch.randint(0, 9, (2,), generator=g).tolist()
        img = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = img.flip(-1) if torch.rand(1, generator=g).item() < 0.5 else img
    return out


def prepare(x: torch.Tensor) -> torch.Tensor:
    x = (x.float() / 255 - MEAN) / STD
    return x.contiguous(memory_format=torch.channels_last)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(x), 1000):
            correct += (model(prepare(x[i : i + 1000])).argmax(1) == y[i : i + 1000]).sum().item()
    return correct / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("~/.cache/reslab/cifar10-jpg").expanduser())
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--bs", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.4)
    args = p.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    xtr, ytr = load_split(args.root.expanduser(), "train")
    xte, yte = load_split(args.root.expanduser(), "test")
    load_s = time.perf_counter() - t0
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; data {load_s:.0f} s")
    model = ResNet20().to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=args.lr, momentum=0.9, nesterov=True,
    )  # fmt: skip
    steps = len(xtr) // args.bs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, args.lr, total_steps=args.epochs * steps, pct_start=0.25, div_factor=25,
        final_div_factor=1e4, base_momentum=0.85, max_momentum=0.95,
    )  # fmt: skip
    print("| epoch | seconds | test accuracy |\n|---:|---:|---:|")
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=g)
        for s in range(steps):
            idx = order[s * args.bs : (s + 1) * args.bs]
            xb = prepare(augment(xtr[idx], g))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, xte, yte)
        print(f"| {epoch + 1} | {time.perf_counter() - t0:.0f} | {acc:.4f} |", flush=True)


if __name__ == "__main__":
    main()
