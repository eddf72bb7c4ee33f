"""Does negative sampling train a many-class classifier? A synthetic 10^4 / 10^5-class run.

Task: ``C`` classes, each a fixed random prototype ``p_c`` in R^64 (standard normal); a sample
of class ``c`` is ``p_c + sigma * noise``. Every batch is freshly drawn, so there is no
over-fitting and held-out accuracy is measured on new draws. The Bayes-optimal rule (nearest
prototype) is computed on the same held-out samples as a ceiling.

Model: an image-embedding stand-in ``encoder`` (Linear 64→512, ReLU, Linear 512→128) and a
class-embedding table ``fc`` (Linear 128→C with bias), i.e. the "two models" of a classifier.

What is measured, side by side on the same data stream and the same wall-clock budget:

* ``softmax``: cross-entropy over all C logits; encoder, table and bias trained with Adam.
* ``nce``: :class:`reslab.training.losses.NegativeSamplingLoss` (k uniform negatives, sparse
  gradients); encoder and bias with Adam, the table with SparseAdam (only gathered rows move).

Both are evaluated with the *full softmax* (top-1 / top-5 over all C classes). The run stops
each method after ``--seconds`` of training (sampling the batch included, evaluation excluded)
or ``--max-steps``, whichever comes first. Hardware and versions are printed with the results.

    flock /tmp/reslab-heavy.lock python benchmarks/nce_many_class.py --classes 10000 100000
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from reslab.models.profile import cpu_name
from reslab.training.losses import NegativeSamplingLoss


def make_encoder(d_in: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 512), nn.ReLU(), nn.Linear(512, dim))


def draw(protos: torch.Tensor, n: int, sigma: float, g: torch.Generator):
    y = torch.randint(0, len(protos), (n,), generator=g)
    return protos[y] + sigma * torch.randn(n, protos.shape[1], generator=g), y


@torch.no_grad()
def evaluate(encoder, fc, x, y, chunk: int = 1000) -> tuple[float, float]:
    top1 = top5 = 0
    for i in range(0, len(x), chunk):
        logits = fc(encoder(x[i : i + chunk]))
        best = logits.topk(5, dim=1).indices
        yy = y[i : i + chunk, None]
        top1 += int((best[:, :1] == yy).sum())
        top5 += int((best == yy).any(1).sum())
    return top1 / len(x), top5 / len(x)


@torch.no_grad()
def nearest_prototype(protos, x, y, chunk: int = 1000) -> float:
    hits = 0
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i : i + chunk], protos)
        hits += int((d.argmin(1) == y[i : i + chunk]).sum())
    return hits / len(x)


def train(method: str, protos, args, seed: int) -> dict:
    torch.manual_seed(seed)
    encoder = make_encoder(protos.shape[1], args.dim)
    fc = nn.Linear(args.dim, len(protos))
    g = torch.Generator().manual_seed(seed + 1)  # the same data stream for both methods
    if method == "softmax":
        opts = [torch.optim.Adam([*encoder.parameters(), *fc.parameters()], lr=args.lr)]
    else:
        nce = NegativeSamplingLoss(args.negatives, sparse_grad=True)
        opts = [
            torch.optim.Adam([*encoder.parameters(), fc.bias], lr=args.lr),
            torch.optim.SparseAdam([fc.weight], lr=args.lr),
        ]
    steps, spent = 0, 0.0
    while spent < args.seconds and steps < args.max_steps:
        start = time.perf_counter()
        x, y = draw(protos, args.batch, args.sigma, g)
        emb = encoder(x)
        if method == "softmax":
            loss = F.cross_entropy(fc(emb), y)
        else:
            loss = nce(emb, y, fc.weight, fc.bias)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        spent += time.perf_counter() - start
        steps += 1
    return {"encoder": encoder, "fc": fc, "steps": steps, "seconds": spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[10**4, 10**5])
    parser.add_argument("--seconds", type=float, default=120.0, help="training time per method")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=20)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval", type=int, default=10_000, help="held-out samples")
    parser.add_argument("--methods", nargs="+", default=["softmax", "nce"])
    args = parser.parse_args()

    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"batch {args.batch}, embedding {args.dim}, k = {args.negatives}, sigma {args.sigma}, "
        f"lr {args.lr}, budget {args.seconds:g} s of training per method; accuracy over all "
        f"classes (full softmax) on {args.eval} fresh samples"
    )
    print(
        "| classes | method | steps | train s | ms/step | samples/class seen "
        "| top-1 | top-5 | nearest-prototype top-1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c in args.classes:
        g = torch.Generator().manual_seed(c)
        protos = torch.randn(c, 64, generator=g)
        x_eval, y_eval = draw(protos, args.eval, args.sigma, torch.Generator().manual_seed(7))
        bayes = nearest_prototype(protos, x_eval, y_eval)
        for method in args.methods:
            run = train(method, protos, args, seed=0)
            top1, top5 = evaluate(run["encoder"], run["fc"], x_eval, y_eval)
            per_class = run["steps"] * args.batch / c
            print(
                f"| {c:,} | {method} | {run['steps']} | {run['seconds']:.0f} | "
                f"{1000 * run['seconds'] / run['steps']:.1f} | {per_class:.1f} | "
                f"{100 * top1:.1f} % | {100 * top5:.1f} % | {100 * bayes:.1f} % |",
                flush=True,
            )


if __name__ == "__main__":
    main()
