"""Loss landscapes and Hessian spectra against references written here: the loss computed by
hand at the origin and at a perturbed point, filter norms measured here, a Hessian-vector
product against a finite difference of gradients, eigenvalues and the trace against the full
Hessian from ``torch.autograd.functional.hessian`` and ``torch.linalg.eigvalsh``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.analysis import hessian_eigenvalues, loss_landscape
from reslab.analysis.hessian import hessian_trace, hessian_vector_product, power_iteration
from reslab.analysis.landscape import grid, random_directions

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_cifar_net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(reslab.create_model("resnet20", width=0.25))


def _data(n: int = 24, classes: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g)


def _small_net(dtype=torch.float64) -> nn.Module:
    """Conv, BatchNorm, ReLU, linear: every kind of parameter, small enough for a full Hessian."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, bias=True),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return randomize_bn(net).to(dtype)


def _reference_loss(model, x, y) -> float:
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        return float(F.cross_entropy(ref(x), y))


def test_the_landscape_at_the_origin_is_the_models_loss():
    model, (x, y) = _tiny_cifar_net(), _data()
    expected = _reference_loss(model, x, y)
    with torch.no_grad():
        accuracy = float((copy.deepcopy(model).eval()(x).argmax(1) == y).float().mean())
    one = loss_landscape(model, x, y, dims=1, steps=5, span=0.5, seed=3, batch_size=7)
    assert one.alphas == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert one.loss[2] == pytest.approx(expected, rel=1e-6)
    assert one.accuracy[2] == pytest.approx(accuracy)
    assert one.origin() == (one.loss[2], one.accuracy[2])
    two = loss_landscape(model, x, y, dims=2, steps=3, span=0.5, seed=3)
    assert two.betas == [-0.5, 0.0, 0.5] and len(two.loss) == 3 and len(two.loss[0]) == 3
    assert two.loss[1][1] == pytest.approx(expected, rel=1e-6)
    # Off the origin the loss changes, and equals the loss of the weights moved by hand.
    assert len(set(one.loss)) == 5


def test_a_grid_point_is_the_loss_of_the_weights_moved_by_hand():
    model, (x, y) = _tiny_cifar_net(), _data()
    res = loss_landscape(model, x, y, dims=2, steps=3, span=0.4, seed=5)
    d1, d2 = random_directions(model, 2, seed=5)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p += 0.4 * d1[name] - 0.4 * d2[name]
    assert res.loss[2][0] == pytest.approx(_reference_loss(moved, x, y), rel=1e-5)


def test_each_filter_of_a_direction_has_its_weights_norm_and_bn_and_biases_get_zero():
    model = _tiny_cifar_net()
    d1, d2 = random_directions(model, 2, seed=0)
    filters = 0
    for name, w in model.named_parameters():
        if w.dim() <= 1:  # BatchNorm weights and biases, the classifier's bias
            assert torch.equal(d1[name], torch.zeros_like(w)), name
            continue
        for i in range(w.shape[0]):
            want = float(torch.linalg.vector_norm(w[i].detach().double()))
            assert float(torch.linalg.vector_norm(d1[name][i].double())) == pytest.approx(
                want, rel=1e-5
            )
            filters += 1
        cosine = F.cosine_similarity(d1[name].flatten(), w.detach().flatten(), dim=0)
        assert abs(float(cosine)) < 0.5, name  # random, not the weights rescaled
        assert not torch.equal(d1[name], d2[name])
    assert filters > 100
    again = random_directions(model, 1, seed=0)[0]
    assert all(torch.equal(again[k], d1[k]) for k in d1)  # the seed fixes the directions


def _snapshot(model: nn.Module):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    return state, modes, grads


def test_the_model_is_left_bit_identical():
    model, (x, y) = _tiny_cifar_net(), _data(n=8)
    model.train()
    model.layer2.eval()  # a mixed mode must come back as it was
    for i, p in enumerate(model.parameters()):
        if i % 2:
            p.grad = torch.randn_like(p)
    state, modes, grads = _snapshot(model)
    loss_landscape(model, x, y, dims=2, steps=3, span=1.0)
    hessian_eigenvalues(model, x, y, k=1, iterations=3)
    hessian_trace(model, x, y, samples=2)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # BN statistics included
    assert [m.training for m in model.modules()] == modes
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_a_hessian_vector_product_is_a_finite_difference_of_gradients():
    model = _small_net()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10, 1, 6, 6, generator=g, dtype=torch.float64), torch.arange(10) % 3
    params = list(model.parameters())
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    hv = hessian_vector_product(model, x, y, v, batch_size=4)

    def gradient(shift: float) -> list[torch.Tensor]:
        moved = copy.deepcopy(model).eval()
        with torch.no_grad():
            for p, d in zip(moved.parameters(), v):
                p += shift * d
        loss = F.cross_entropy(moved(x), y)
        return torch.autograd.grad(loss, list(moved.parameters()))

    eps = 1e-5
    plus, minus = gradient(eps), gradient(-eps)
    for h, a, b in zip(hv, plus, minus):
        torch.testing.assert_close(h, (a - b) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_power_iteration_finds_the_top_eigenvalues_of_a_quadratic():
    # f(w) = ½ wᵀAw has the Hessian A: a symmetric matrix with a known spectrum.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    spectrum = torch.tensor([9.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.2, 0.1, 0.0, -0.3, -1.0])
    a = q @ torch.diag(spectrum.double()) @ q.T
    matvec = lambda v: [(a @ v[0].flatten()).view(3, 4)]  # noqa: E731
    like = [torch.zeros(3, 4, dtype=torch.float64)]
    values, vectors = power_iteration(matvec, like, k=3, iterations=500, tol=1e-12)
    reference = torch.linalg.eigvalsh(a).flip(0)[:3]
    assert values == pytest.approx(reference.tolist(), rel=1e-6)
    top = vectors[0][0].flatten()
    assert abs(float(top @ q[:, 0])) == pytest.approx(1.0, abs=1e-6)


def _full_hessian(model, x, y) -> torch.Tensor:
    """The Hessian of the mean cross-entropy in eval mode, every parameter flattened."""
    ref = copy.deepcopy(model).eval()
    names = [n for n, _ in ref.named_parameters()]
    shapes = [p.shape for _, p in ref.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in ref.parameters()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = w[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return F.cross_entropy(torch.func.functional_call(ref, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_hessian_eigenvalues_and_trace_equal_the_full_hessians():
    model = _small_net()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(16, 1, 6, 6, generator=g, dtype=torch.float64), torch.arange(16) % 3
    hessian = _full_hessian(model, x, y)
    spectrum = torch.linalg.eigvalsh(hessian)
    by_size = spectrum[spectrum.abs().argsort(descending=True)]
    got = hessian_eigenvalues(model, x, y, k=2, iterations=2000, tol=1e-12, batch_size=5)
    assert got == pytest.approx(by_size[:2].tolist(), rel=1e-4)
    estimate = hessian_trace(model, x, y, samples=400, seed=1)
    true = float(torch.trace(hessian))
    assert abs(estimate.value - true) < max(4 * estimate.stderr, 1e-9)
    assert estimate.value == pytest.approx(true, rel=0.15) and estimate.samples == 400


def test_bad_arguments_are_refused():
    model, (x, y) = _tiny_cifar_net(), _data(n=4)
    with pytest.raises(ValueError, match="odd"):
        loss_landscape(model, x, y, steps=4)
    with pytest.raises(ValueError, match="dims"):
        loss_landscape(model, x, y, dims=3)
    with pytest.raises(ValueError, match="labels"):
        loss_landscape(model, x, y[:2])
    with pytest.raises(ValueError, match="span"):
        grid(5, 0.0)
    with pytest.raises(ValueError, match="k must"):
        hessian_eigenvalues(model, x, y, k=0)
