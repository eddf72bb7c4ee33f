"""Negative sampling: train a classifier with many classes without the batch x classes logits.

A classifier's last layer is a table of class embeddings ``u_c`` (the rows of ``fc.weight``).
Softmax cross-entropy scores every image embedding ``v`` against every row: a
``batch x num_classes`` matrix, its softmax and its gradient. Negative sampling (word2vec's
simplification of noise-contrastive estimation) scores ``v`` against its true class and ``k``
sampled "negative" classes only::

    loss(v, t) = -log sigmoid(v . u_t + b_t) - sum_j log sigmoid(-(v . u_j + b_j)),  j in neg(t)

with the ``k`` negatives drawn without replacement and never equal to ``t``, either uniformly or
from the word2vec unigram distribution ``count^0.75``. Only the ``batch x (k + 1)`` gathered rows
take part, so memory and time no longer grow with ``batch x num_classes``.

The fc bias, when the model has one, is part of the score: evaluation uses the full softmax over
``fc(v) = W v + b``, so training the same score keeps the two consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reslab.training.callback import Callback

__all__ = [
    "NegativeSamplingCallback",
    "NegativeSamplingLoss",
    "sample_negatives",
    "unigram_probs",
]

# The dense sampler (one multinomial over a batch x classes weight matrix) is exact and simple
# but costs O(batch x classes) (about 50 ms for 256 x 10^4 on 2 cores). The sparse one draws
# with replacement and keeps first occurrences, O(batch x k) while k is well below the number
# of classes (about 1 ms); "auto" uses it unless k is most of the classes or the matrix is tiny.
DENSE_SAMPLING_LIMIT = 1 << 14


def unigram_probs(class_counts: Sequence[float] | Tensor, power: float = 0.75) -> Tensor:
    """word2vec's noise distribution: ``count ** power``, normalised to sum to one."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got {counts.shape}")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("class_counts must be finite and non-negative")
    weights = counts.pow(power)
    if weights.sum() <= 0:
        raise ValueError("class_counts are all zero")
    return (weights / weights.sum()).float()


def sample_negatives(
    targets: Tensor,
    num_classes: int,
    num_negatives: int,
    probs: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    method: str = "auto",
) -> Tensor:
    """Draw ``num_negatives`` classes per target, without replacement and never the target.

    Rows are independent samples from ``probs`` (uniform when ``None``) restricted to the
    classes other than the target, drawn one after another without replacement (what
    ``torch.multinomial(..., replacement=False)`` does).

    Args:
        targets: ``(batch,)`` true classes.
        num_classes: number of classes ``C``.
        num_negatives: ``k`` negatives per row, at most ``C - 1``.
        probs: ``(C,)`` sampling weights, or ``None`` for uniform.
        generator: random generator (for reproducible draws).
        method: ``"dense"`` (one multinomial over a ``batch x C`` weight matrix with the
            target zeroed), ``"sparse"`` (draw with replacement, keep first occurrences;
            ``O(batch x k)`` time and memory) or ``"auto"`` (dense when ``batch x C`` is tiny
            or ``k`` is more than half of the other classes, sparse otherwise).

    Returns:
        ``(batch, k)`` int64 class indices on ``targets``' device.
    """
    k = int(num_negatives)
    if targets.dim() != 1:
        raise ValueError(f"targets must be 1-D, got shape {tuple(targets.shape)}")
    if not 1 <= k < num_classes:
        raise ValueError(f"need 1 <= num_negatives < num_classes, got {k} and {num_classes}")
    if probs is not None:
        if probs.shape != (num_classes,):
            raise ValueError(f"probs has shape {tuple(probs.shape)}, expected ({num_classes},)")
        if int((probs > 0).sum()) < k + 1:
            raise ValueError(f"fewer than {k + 1} classes have a non-zero sampling probability")
        probs = probs.to(targets.device, torch.float32)
    targets = targets.long()
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must lie in [0, {num_classes})")
    if method == "auto":
        small = targets.numel() * num_classes <= DENSE_SAMPLING_LIMIT
        method = "dense" if small or 2 * k > num_classes - 1 else "sparse"
    if method == "dense":
        return _sample_dense(targets, num_classes, k, probs, generator)
    if method == "sparse":
        return _sample_sparse(targets, num_classes, k, probs, generator)
    raise ValueError(f"unknown sampling method {method!r}; expected 'auto', 'dense' or 'sparse'")


def _sample_dense(
    targets: Tensor, num_classes: int, k: int, probs: Tensor | None, generator
) -> Tensor:
    # The seed's trick, vectorised: one weight row per example with its own class zeroed.
    n = targets.numel()
    if probs is None:
        weights = torch.ones(n, num_classes, device=targets.device)
    else:
        weights = probs.expand(n, num_classes).clone()
    weights[torch.arange(n, device=targets.device), targets] = 0.0
    if n == 0:
        return torch.empty(0, k, dtype=torch.long, device=targets.device)
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def _draw(targets: Tensor, m: int, num_classes: int, probs: Tensor | None, generator) -> Tensor:
    n = targets.numel()
    if probs is None:
        # Uniform over the C - 1 other classes: draw from [0, C-1) and step over the target.
        draws = torch.randint(
            0, num_classes - 1, (n, m), device=targets.device, generator=generator
        )
        return draws + (draws >= targets[:, None]).long()
    flat = torch.multinomial(probs, n * m, replacement=True, generator=generator)
    return flat.view(n, m)


def _first_distinct(draws: Tensor, targets: Tensor) -> Tensor:
    """Mask of the entries that are the first occurrence of their value in their row."""
    values, order = draws.sort(dim=1, stable=True)  # stable: the earliest copy comes first
    first = torch.ones_like(values, dtype=torch.bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    mask = torch.zeros_like(first).scatter_(1, order, first)
    return mask & (draws != targets[:, None])


def _sample_sparse(
    targets: Tensor, num_classes: int, k: int, probs: Tensor | None, generator
) -> Tensor:
    # The first k distinct non-target values of an i.i.d. sequence from `probs` are exactly a
    # draw without replacement from `probs` restricted to the other classes. Rows that have not
    # collected k values yet get their sequence extended (never restarted: restarting would
    # condition on a quick collection and bias the draw).
    out = torch.empty(targets.numel(), k, dtype=torch.long, device=targets.device)
    todo = torch.arange(targets.numel(), device=targets.device)
    draws = torch.empty(targets.numel(), 0, dtype=torch.long, device=targets.device)
    m = k + max(8, k // 4)
    while todo.numel():
        t = targets[todo]
        draws = torch.cat([draws, _draw(t, m, num_classes, probs, generator)], dim=1)
        keep = _first_distinct(draws, t)
        rank = keep.cumsum(1)
        done = rank[:, -1] >= k
        if done.any():
            chosen = keep[done] & (rank[done] <= k)
            out[todo[done]] = draws[done][chosen].view(-1, k)
        todo, draws = todo[~done], draws[~done]
        if draws.shape[1] >= 4 * num_classes:
            # A very skewed distribution: finish the few stragglers exactly, row by row, by
            # sampling the rest without replacement from what they have not collected yet.
            for row, seq in zip(todo.tolist(), draws):
                out[row] = _finish_row(seq, targets[row], num_classes, k, probs, generator)
            break
        m = draws.shape[1]  # double the sequence length each round
    return out


def _finish_row(
    seq: Tensor, target: Tensor, num_classes: int, k: int, probs: Tensor | None, generator
) -> Tensor:
    mask = _first_distinct(seq[None], target.view(1))[0]
    have = seq[mask]
    weights = torch.ones(num_classes, device=seq.device) if probs is None else probs.clone()
    weights[have] = 0.0
    weights[target] = 0.0
    rest = torch.multinomial(weights, k - have.numel(), replacement=False, generator=generator)
    return torch.cat([have, rest])


class NegativeSamplingLoss(nn.Module):
    """Negative-sampling loss over gathered class embeddings, averaged over the batch.

    Call it as ``loss(embeddings, targets, class_weight, bias=None)`` where ``class_weight``
    is the ``(num_classes, dim)`` class-embedding table (a classifier's ``fc.weight``).

    Args:
        num_negatives: ``k``, negatives per example.
        distribution: ``"uniform"``, ``"unigram"`` (needs ``class_counts``) or the class
            counts themselves (same as ``"unigram"`` with those counts).
        class_counts: examples per class, for the unigram distribution.
        power: exponent of the unigram distribution (word2vec's 0.75).
        sparse_grad: gather with ``sparse=True`` so ``class_weight.grad`` is a sparse tensor
            of the gathered rows (needs an optimizer that takes sparse gradients).
        method: negative sampler, see :func:`sample_negatives`.
    """

    probs: Tensor | None  # buffer: the unigram distribution, None for uniform

    def __init__(
        self,
        num_negatives: int,
        distribution: str | Sequence[float] | Tensor = "uniform",
        *,
        class_counts: Sequence[float] | Tensor | None = None,
        power: float = 0.75,
        sparse_grad: bool = False,
        method: str = "auto",
    ) -> None:
        super().__init__()
        if int(num_negatives) < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        self.num_negatives = int(num_negatives)
        self.sparse_grad = sparse_grad
        self.method = method
        if isinstance(distribution, str):
            if distribution == "uniform":
                counts = None
            elif distribution == "unigram":
                if class_counts is None:
                    raise ValueError("distribution='unigram' needs class_counts")
                counts = class_counts
            else:
                raise ValueError(
                    f"unknown distribution {distribution!r}; expected 'uniform', 'unigram' "
                    "or a sequence of class counts"
                )
        else:
            counts = distribution
        self.distribution = "uniform" if counts is None else "unigram"
        probs = None if counts is None else unigram_probs(counts, power)
        self.register_buffer("probs", probs, persistent=False)

    def sample(
        self, targets: Tensor, num_classes: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``(batch, k)`` negatives for ``targets`` (see :func:`sample_negatives`)."""
        if self.probs is not None and self.probs.numel() != num_classes:
            raise ValueError(
                f"class counts cover {self.probs.numel()} classes but the table has {num_classes}"
            )
        if self.probs is not None and self.probs.device != targets.device:
            self.probs = self.probs.to(targets.device)  # once, not a copy per step
        return sample_negatives(
            targets,
            num_classes,
            self.num_negatives,
            self.probs,
            generator=generator,
            method=self.method,
        )

    def forward(
        self,
        embeddings: Tensor,
        targets: Tensor,
        class_weight: Tensor,
        bias: Tensor | None = None,
        negatives: Tensor | None = None,
    ) -> Tensor:
        """The batch-mean loss.

        Args:
            embeddings: ``(batch, dim)`` image embeddings ``v``.
            targets: ``(batch,)`` true classes.
            class_weight: ``(num_classes, dim)`` class embeddings ``u``.
            bias: optional ``(num_classes,)`` per-class bias added to every score.
            negatives: ``(batch, k)`` negatives to use instead of sampling (for tests and
                for reusing one draw).
        """
        if embeddings.dim() != 2 or class_weight.dim() != 2:
            raise ValueError(
                f"expected embeddings (batch, dim) and class_weight (classes, dim), got "
                f"{tuple(embeddings.shape)} and {tuple(class_weight.shape)}"
            )
        if embeddings.shape[1] != class_weight.shape[1]:
            raise ValueError(
                f"embedding dim {embeddings.shape[1]} != class_weight dim {class_weight.shape[1]}"
            )
        if targets.shape != embeddings.shape[:1]:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} does not match batch {embeddings.shape[0]}"
            )
        num_classes = class_weight.shape[0]
        if bias is not None and bias.shape != (num_classes,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({num_classes},)")
        targets = targets.long()
        if negatives is None:
            with torch.no_grad():
                negatives = self.sample(targets, num_classes)
        # Column 0 is the true class, columns 1..k the negatives: one gather, one batched dot.
        index = torch.cat([targets[:, None], negatives.long()], dim=1)
        flat = index.flatten()
        if self.sparse_grad:
            rows = F.embedding(index, class_weight, sparse=True)  # (B, k+1, D)
        else:
            # index_select's backward is one index_add_: faster on CPU than embedding's.
            rows = class_weight.index_select(0, flat).view(*index.shape, -1)
        scores = torch.bmm(rows, embeddings.unsqueeze(-1).to(rows.dtype)).squeeze(-1)
        if bias is not None:
            scores = scores + bias.index_select(0, flat).view(index.shape)
        # -log sigmoid(s) = softplus(-s) for the true class, -log sigmoid(-s) = softplus(s)
        # for the negatives; softplus is the numerically stable form of both.
        sign = torch.ones_like(scores)
        sign[:, 0] = -1.0
        return F.softplus(sign * scores.float()).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"num_negatives={self.num_negatives}, distribution={self.distribution!r}"


class NegativeSamplingCallback(Callback):
    """Train a reslab classifier with :class:`NegativeSamplingLoss` instead of softmax.

    On a training batch it computes the image embeddings
    (``model.forward_head(model.forward_features(x), pre_logits=True)``) and the loss against
    ``model.fc.weight`` and ``model.fc.bias``, and sets ``learn.loss`` itself; it never builds
    the full logits, so ``learn.pred`` is ``None`` (no training accuracy). Validation does not
    go through ``compute_loss``: the Learner evaluates with the full softmax, its usual loss
    and metrics.

    Args:
        num_negatives: ``k``, negatives per example.
        distribution: ``"uniform"`` or ``"unigram"`` (``count^0.75``).
        class_counts: examples per class, required for ``"unigram"``.
    """

    def __init__(
        self,
        num_negatives: int,
        distribution: str = "uniform",
        class_counts: Sequence[float] | Tensor | None = None,
    ) -> None:
        self.nce = NegativeSamplingLoss(num_negatives, distribution, class_counts=class_counts)

    def before_fit(self) -> None:
        # Fail before the first epoch, not at the first batch.
        fc = getattr(self.learn.model, "fc", None)
        classes = getattr(fc, "out_features", None)
        if classes is not None and self.nce.num_negatives >= classes:
            raise ValueError(
                f"--negatives {self.nce.num_negatives} needs more classes than the model's "
                f"{classes} (at most {classes - 1} negatives)"
            )

    def compute_loss(self, learn: Any = None) -> bool:
        """Set ``learn.loss`` on training batches; return ``False`` (default path) otherwise."""
        learn = self.learn if learn is None else learn
        model = learn.model
        if not model.training:
            return False
        fc = model.fc
        if not isinstance(fc, nn.Linear):
            raise ValueError("negative sampling needs a model whose fc is a linear classifier")
        xb = learn.xb[0] if isinstance(learn.xb, (tuple, list)) else learn.xb
        yb = learn.yb[0] if isinstance(learn.yb, (tuple, list)) else learn.yb
        wrapper = getattr(learn, "forward_model", model)
        if wrapper is model:
            embeddings = model.forward_head(model.forward_features(xb), pre_logits=True)
        else:
            # A DDP wrapper: the forward must go through it so gradients get all-reduced.
            # With fc swapped for an identity for this one call, model(x) is the embedding;
            # fc's parameters still get their gradients (from the gather) in backward.
            model.fc = nn.Identity()
            try:
                embeddings = wrapper(xb)
            finally:
                model.fc = fc
        learn.pred = None
        learn.loss = self.nce(embeddings, yb, fc.weight, fc.bias)
        return True

    def __repr__(self) -> str:
        return f"{self.name}({self.nce.extra_repr()})"
