"""NegativeSamplingLoss and its sampler, checked against direct computations of the formula."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import reslab.training.losses as losses
from reslab import create_model
from reslab.training.losses import (
    NegativeSamplingCallback,
    NegativeSamplingLoss,
    sample_negatives,
    unigram_probs,
)

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _loop_loss(v, targets, weight, bias, negatives) -> float:
    """The seed's formula, one example and one dot product at a time, in Python floats."""
    total = 0.0
    for i in range(v.shape[0]):
        vi = v[i].tolist()

        def score(c: int, vi=vi) -> float:
            s = sum(a * b for a, b in zip(vi, weight[c].tolist()))
            return s + (float(bias[c]) if bias is not None else 0.0)

        t = int(targets[i])
        total += -_log_sigmoid(score(t))
        for j in negatives[i].tolist():
            total += -_log_sigmoid(-score(j))
    return total / v.shape[0]


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_loss_equals_per_example_loop(with_bias, method):
    g = torch.Generator().manual_seed(1)
    B, D, C, k = 7, 5, 13, 4
    v = torch.randn(B, D, generator=g, dtype=torch.float64)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    bias = torch.randn(C, generator=g, dtype=torch.float64) if with_bias else None
    targets = torch.randint(0, C, (B,), generator=g)
    loss_fn = NegativeSamplingLoss(k, method=method)
    negatives = loss_fn.sample(targets, C, generator=g)
    got = loss_fn(v, targets, weight, bias, negatives=negatives)
    assert got.shape == ()
    assert float(got) == pytest.approx(_loop_loss(v, targets, weight, bias, negatives), rel=1e-6)


def test_sampling_inside_forward_is_used_once():
    # Without explicit negatives the loss samples its own: reseeding reproduces the same value,
    # and that value equals the loop formula on the negatives the sampler draws for that seed.
    B, D, C, k = 5, 4, 9, 3
    v, weight, bias = torch.randn(B, D), torch.randn(C, D), torch.randn(C)
    targets = torch.randint(0, C, (B,))
    loss_fn = NegativeSamplingLoss(k)
    torch.manual_seed(5)
    got = loss_fn(v, targets, weight, bias)
    torch.manual_seed(5)
    negatives = loss_fn.sample(targets, C)
    assert float(got) == pytest.approx(_loop_loss(v, targets, weight, bias, negatives), rel=1e-5)


def test_all_negatives_equals_full_logit_formula():
    # k = C - 1 leaves no randomness: every other class is a negative.
    B, D, C = 6, 8, 7
    v, weight, bias = torch.randn(B, D), torch.randn(C, D), torch.randn(C)
    targets = torch.randint(0, C, (B,))
    logits = F.linear(v, weight, bias)
    onehot = F.one_hot(targets, C).bool()
    expected = -(F.logsigmoid(logits[onehot]) + F.logsigmoid(-logits).masked_fill(onehot, 0).sum(1))
    got = NegativeSamplingLoss(C - 1)(v, targets, weight, bias)
    torch.testing.assert_close(got, expected.mean())


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(0, 12),
    num_classes=st.integers(2, 40),
    data=st.data(),
    method=st.sampled_from(["dense", "sparse"]),
    unigram=st.booleans(),
)
def test_negatives_are_distinct_and_never_the_target(batch, num_classes, data, method, unigram):
    k = data.draw(st.integers(1, num_classes - 1))
    seed = data.draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, num_classes, (batch,), generator=g)
    probs = None
    if unigram:
        counts = torch.randint(0, 50, (num_classes,), generator=g).float()
        positive = torch.randperm(num_classes, generator=g)[: k + 1]
        counts[positive] += 1  # at least k + 1 classes can be drawn
        probs = unigram_probs(counts)
    neg = sample_negatives(targets, num_classes, k, probs, generator=g, method=method)
    assert neg.shape == (batch, k) and neg.dtype == torch.long
    for row, t in zip(neg.tolist(), targets.tolist()):
        assert len(set(row)) == k, row
        assert t not in row
        assert all(0 <= c < num_classes for c in row)
        if probs is not None:
            # Zero-probability classes are drawn only when a row has nothing else left.
            zero = {c for c in range(num_classes) if probs[c] == 0}
            available = num_classes - 1 - len(zero - {t})
            if available >= k:
                assert not zero & set(row)


def _inclusion_probs_k2(p: list[float], target: int) -> list[float]:
    """P(class j among 2 draws without replacement) from p restricted to j != target."""
    q = [0.0 if j == target else pj for j, pj in enumerate(p)]
    s = sum(q)
    q = [x / s for x in q]
    out = []
    for j, qj in enumerate(q):
        second = sum(qi * qj / (1 - qi) for i, qi in enumerate(q) if i != j and qi > 0)
        out.append(qj + second)
    return out


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_unigram_sampling_frequencies(method):
    counts = [40.0, 1.0, 10.0, 300.0, 5.0, 0.0, 120.0]
    p = [c**0.75 for c in counts]
    p = [x / sum(p) for x in p]
    target, n = 3, 40_000
    g = torch.Generator().manual_seed(0)
    neg = sample_negatives(
        torch.full((n,), target), len(counts), 2, unigram_probs(counts), generator=g, method=method
    )
    freq = torch.bincount(neg.flatten(), minlength=len(counts)).double() / n
    for j, expected in enumerate(_inclusion_probs_k2(p, target)):
        tol = 5 * math.sqrt(max(expected * (1 - expected), 1e-12) / n) + 1e-9
        assert abs(float(freq[j]) - expected) <= tol, (j, float(freq[j]), expected)


@pytest.mark.parametrize("method", ["dense", "sparse"])
def test_uniform_sampling_frequencies(method):
    C, k, n = 9, 3, 30_000
    targets = torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(2))
    neg = sample_negatives(targets, C, k, generator=torch.Generator().manual_seed(3), method=method)
    hits = torch.zeros(C, C)
    hits.index_put_((targets[:, None].expand(-1, k), neg), torch.ones(n, k), accumulate=True)
    per_target = torch.bincount(targets, minlength=C).double()
    rate = hits.double() / per_target[:, None]
    expected = k / (C - 1)
    off_diag = ~torch.eye(C, dtype=torch.bool)
    assert (rate[off_diag] - expected).abs().max() < 5 * math.sqrt(expected / per_target.min())
    assert (rate.diagonal() == 0).all()


def test_skewed_distribution_finishes_exactly(monkeypatch):
    # One class holds almost all the mass: collecting 8 distinct others from i.i.d. draws would
    # take forever, so the sampler must finish those rows with the exact row-wise fallback.
    calls = []
    finish = losses._finish_row
    monkeypatch.setattr(losses, "_finish_row", lambda *a: calls.append(1) or finish(*a))
    counts = [1e9] + [1e-3] * 9
    targets = torch.tensor([1, 2, 3, 0])
    neg = sample_negatives(targets, 10, 8, unigram_probs(counts), method="sparse")
    assert calls, "the fallback was not exercised"
    for row, t in zip(neg.tolist(), targets.tolist()):
        assert len(set(row)) == 8 and t not in row


def test_unigram_probs_hand_values():
    torch.testing.assert_close(unigram_probs([1, 16, 0]), torch.tensor([1 / 9, 8 / 9, 0.0]))
    torch.testing.assert_close(unigram_probs([1, 4], power=0.5), torch.tensor([1 / 3, 2 / 3]))


@pytest.mark.parametrize("sparse_grad", [False, True])
def test_gradients_reach_only_gathered_rows(sparse_grad):
    B, D, C, k = 4, 6, 50, 3
    weight = torch.randn(C, D, requires_grad=True)
    bias = torch.randn(C, requires_grad=True)
    v = torch.randn(B, D, requires_grad=True)
    targets = torch.tensor([3, 3, 17, 40])
    loss_fn = NegativeSamplingLoss(k, sparse_grad=sparse_grad)
    negatives = loss_fn.sample(targets, C)
    loss_fn(v, targets, weight, bias, negatives=negatives).backward()
    gathered = set(targets.tolist()) | set(negatives.flatten().tolist())
    grad = weight.grad.to_dense() if sparse_grad else weight.grad
    assert weight.grad.is_sparse == sparse_grad
    assert {int(i) for i in grad.abs().sum(1).nonzero()} == gathered
    assert {int(i) for i in bias.grad.nonzero()} == gathered
    assert (v.grad.abs().sum(1) > 0).all()
    if sparse_grad:
        # The sparse gradient carries the same values as the dense one.
        w2 = weight.detach().clone().requires_grad_()
        NegativeSamplingLoss(k)(v.detach(), targets, w2, bias.detach(), negatives).backward()
        torch.testing.assert_close(grad, w2.grad)


def test_never_builds_the_logit_matrix():
    # With 200k classes, B x C logits would be 800 MB of float32; the loss gathers B x (k+1)
    # rows only. Checked through the autograd graph: no saved tensor is wider than k + 1 rows.
    B, D, C, k = 32, 16, 200_000, 5
    weight = torch.randn(C, D, requires_grad=True)
    v = torch.randn(B, D, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = NegativeSamplingLoss(k)(v, torch.randint(0, C, (B,)), weight)
    loss.backward()
    saved_activations = [s for s in sizes if s != weight.numel()]
    assert max(saved_activations) <= B * (k + 1) * D


def test_nce_learns_a_many_class_problem():
    # 500 classes, prototypes in 32-d; a linear embedding trained with 10 negatives must
    # classify held-out noisy samples with the *full softmax* far above chance (0.2 %).
    g = torch.Generator().manual_seed(0)
    C, d_in, D = 500, 32, 32
    protos = torch.randn(C, d_in, generator=g)

    def batch(n):
        y = torch.randint(0, C, (n,), generator=g)
        return protos[y] + 0.3 * torch.randn(n, d_in, generator=g), y

    encoder = torch.nn.Linear(d_in, D)
    classes = torch.nn.Linear(D, C)
    opt = torch.optim.Adam([*encoder.parameters(), *classes.parameters()], lr=1e-2)
    loss_fn = NegativeSamplingLoss(10)
    for _ in range(400):
        x, y = batch(256)
        loss = loss_fn(encoder(x), y, classes.weight, classes.bias)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(2000)
    with torch.no_grad():
        acc = (classes(encoder(x)).argmax(1) == y).float().mean()
    assert acc > 0.9


def test_bad_input_raises_clear_errors():
    v, w, t = torch.randn(3, 4), torch.randn(10, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="num_negatives"):
        NegativeSamplingLoss(10)(v, t, w)
    with pytest.raises(ValueError, match="at least 1"):
        NegativeSamplingLoss(0)
    with pytest.raises(ValueError, match="class_counts"):
        NegativeSamplingLoss(2, "unigram")
    with pytest.raises(ValueError, match="unknown distribution"):
        NegativeSamplingLoss(2, "zipf")
    with pytest.raises(ValueError, match="cover 5 classes"):
        NegativeSamplingLoss(2, [1, 2, 3, 4, 5])(v, t, w)
    with pytest.raises(ValueError, match="non-negative"):
        unigram_probs([1, -1])
    with pytest.raises(ValueError, match="non-zero"):
        sample_negatives(t, 4, 2, unigram_probs([1, 1, 0, 0]))
    with pytest.raises(ValueError, match="dim"):
        NegativeSamplingLoss(2)(v, t, torch.randn(10, 5))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        NegativeSamplingLoss(2)(v, torch.tensor([0, 1, 10]), w)
    with pytest.raises(ValueError, match="method"):
        sample_negatives(t, 10, 2, method="fast")


def _tiny_model(num_classes=7):
    return create_model("resnet20", num_classes=num_classes, in_chans=1, width=0.5)


def test_callback_sets_loss_from_embeddings_and_fc():
    model = _tiny_model().train()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 6, 3])
    learn = SimpleNamespace(model=model, xb=(x,), yb=(y,), loss=None, pred="untouched")
    cb = NegativeSamplingCallback(num_negatives=3)
    calls = []
    model.fc.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(11)
    assert cb.compute_loss(learn) is True
    assert not calls, "the full logits were computed"
    assert learn.pred is None
    # Reference: the model's backbone embedding and its fc table, the same negatives.
    torch.manual_seed(11)
    negatives = NegativeSamplingLoss(3).sample(y, 7)
    emb = model.backbone(x)
    expected = _loop_loss(
        emb.detach().double(),
        y,
        model.fc.weight.detach().double(),
        model.fc.bias.detach().double(),
        negatives,
    )
    assert float(learn.loss.detach()) == pytest.approx(expected, rel=1e-5)
    learn.loss.backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    gathered = set(y.tolist()) | set(negatives.flatten().tolist())
    assert {int(i) for i in model.fc.weight.grad.abs().sum(1).nonzero()} == gathered


def test_callback_steps_aside_for_validation():
    model = _tiny_model().eval()
    learn = SimpleNamespace(
        model=model,
        xb=torch.rand(2, 1, 28, 28),
        yb=torch.tensor([1, 2]),
        loss="untouched",
        pred="untouched",
    )
    assert NegativeSamplingCallback(2).compute_loss(learn) is False
    assert learn.loss == "untouched" and learn.pred == "untouched"


def test_callback_unigram_needs_counts_for_every_class():
    model = _tiny_model(num_classes=5).train()
    learn = SimpleNamespace(model=model, xb=torch.rand(2, 1, 28, 28), yb=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="cover 3 classes"):
        NegativeSamplingCallback(2, "unigram", class_counts=[5, 1, 1]).compute_loss(learn)
    cb = NegativeSamplingCallback(2, "unigram", class_counts=[5, 1, 1, 2, 9])
    assert cb.compute_loss(learn) is True and torch.isfinite(learn.loss)


def test_callback_goes_through_a_ddp_wrapper(tmp_path):
    # Under torchrun the Learner's forward_model is a DDP wrapper; the forward must go through
    # it (or gradients are never all-reduced). One gloo process: grads must equal the plain run.
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = _tiny_model().train()
    twin = _tiny_model().train()
    twin.load_state_dict(model.state_dict())
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 6, 3])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(twin)
        runs = []
        for m, wrapper in ((model, model), (twin, ddp)):
            learn = SimpleNamespace(model=m, forward_model=wrapper, xb=x, yb=y)
            torch.manual_seed(3)
            assert NegativeSamplingCallback(3).compute_loss(learn)
            learn.loss.backward()
            runs.append(learn.loss.detach())
        assert isinstance(twin.fc, torch.nn.Linear)  # restored after the wrapped forward
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(runs[0], runs[1])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_learner_trains_with_negative_sampling():
    from reslab.training import Learner

    # 20 classes of 1x8x8 images (a fixed random prototype per class plus noise), NCE with 5
    # negatives through the Learner; validation uses the full softmax.
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(20, 1, 8, 8, generator=g)

    def batches(n_batches, bs=64):
        out = []
        for _ in range(n_batches):
            y = torch.randint(0, 20, (bs,), generator=g)
            out.append(((protos[y] + 0.15 * torch.randn(bs, 1, 8, 8, generator=g)).clamp(0, 1), y))
        return out

    model = create_model("resnet20", num_classes=20, in_chans=1, width=0.5)
    fc_calls = []
    model.fc.register_forward_hook(lambda m, i, o: fc_calls.append(model.training))
    learn = Learner(
        model,
        batches(40),
        batches(8),
        opt="adamw",
        lr=3e-3,
        wd=0.0,
        cbs=[NegativeSamplingCallback(5)],
        progress=False,
    )
    learn.fit(3)
    assert not any(fc_calls), "training computed the full logits"
    assert fc_calls, "validation did not use the full softmax head"
    results = learn.validate()
    assert results["accuracy"] > 0.6, results


def test_too_many_negatives_fail_before_training():
    from reslab.training import Learner

    model = _tiny_model(num_classes=4)
    data = [(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))]
    learn = Learner(model, data, None, cbs=[NegativeSamplingCallback(4)], progress=False)
    with pytest.raises(ValueError, match="at most 3 negatives"):
        learn.fit(1)
