"""Shattered gradients: the autocorrelation against signals whose correlation is known by
construction (white noise, sinusoids, an AR(1) process), the input gradient against
``torch.autograd`` run here, block gradient norms against hooks written here, and BatchNorm
calibration against the batch statistics computed by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.analysis import autocorrelation, correlation_length, shattering
from reslab.analysis.shattered import (
    calibrate_batchnorm,
    image_segment,
    line_gradients,
    sweep_line,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_white_noise_has_no_correlation_and_a_smooth_signal_almost_full():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(256, 300, generator=g)
    acf = autocorrelation(noise, max_lag=8)
    assert acf[0] == pytest.approx(1.0)
    assert all(abs(r) < 0.02 for r in acf[1:])  # 1/sqrt(255·300) ≈ 0.004 per lag
    assert correlation_length(acf) < 1.0
    # A sinusoid of angular step ω over whole periods: ρ(ℓ) = cos(ωℓ) (hand-computed).
    t = torch.arange(256, dtype=torch.float64)
    omega = 2 * math.pi / 128
    phases = torch.rand(50, generator=g, dtype=torch.float64) * 6.28
    smooth = torch.sin(omega * t[:, None] + phases)
    acf = autocorrelation(smooth, max_lag=40)
    for lag in (1, 10, 40):
        assert acf[lag] == pytest.approx(math.cos(omega * lag), abs=0.02 + lag / 256)
    assert acf[1] > 0.99
    # cos(ωℓ) = 1/e at ℓ = arccos(1/e)/ω ≈ 24.2 points
    assert correlation_length(acf) == pytest.approx(math.acos(math.exp(-1)) / omega, rel=0.1)


def test_an_ar1_process_has_its_coefficient_at_lag_one():
    g = torch.Generator().manual_seed(1)
    phi, x = 0.7, torch.zeros(2000, 20)
    shocks = torch.randn(2000, 20, generator=g)
    for i in range(1, 2000):
        x[i] = phi * x[i - 1] + shocks[i]
    acf = autocorrelation(x, max_lag=3)
    assert acf[1] == pytest.approx(phi, abs=0.03)
    assert acf[2] == pytest.approx(phi**2, abs=0.04)
    # ρ(ℓ) = φ^ℓ falls below 1/e at ℓ = 1/ln(1/φ) ≈ 2.8
    assert correlation_length(autocorrelation(x, max_lag=10)) == pytest.approx(2.8, abs=0.35)


def test_constant_series_are_left_out_and_a_constant_signal_is_refused():
    g = torch.Generator().manual_seed(2)
    mixed = torch.cat([torch.randn(100, 5, generator=g), torch.ones(100, 5)], dim=1)
    assert autocorrelation(mixed, 3) == pytest.approx(autocorrelation(mixed[:, :5], 3))
    with pytest.raises(ValueError, match="constant"):
        autocorrelation(torch.ones(10, 3))
    assert correlation_length([1.0, 0.9, 0.8]) == math.inf


def _net(name: str, layers: str = "torch") -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(reslab.create_model(name, width=0.25, layers=layers))


def test_line_gradients_are_autograds_and_block_norms_match_hooks():
    model = _net("resnet20")
    model.train()
    inputs, _ = sweep_line((3, 32, 32), points=6, seed=0)
    grads, blocks = line_gradients(model, inputs, target=3, batch_size=4)
    assert model.training  # mode restored
    ref = copy.deepcopy(model).eval()
    x = inputs.clone().requires_grad_(True)
    outputs = {}
    hooks = [ref.layer2[1].register_forward_hook(lambda m, a, o: outputs.setdefault("h", o))]
    out = ref(x)
    outputs["h"].retain_grad()
    out[:, 3].sum().backward()
    for h in hooks:
        h.remove()
    torch.testing.assert_close(grads, x.grad)
    want = outputs["h"].grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(blocks["layer2.1"], want)
    assert list(blocks) == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]


def test_lines_go_where_they_say():
    start, end = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    inputs, velocity = image_segment(start, end, points=5)
    assert torch.equal(inputs[0], start) and torch.equal(inputs[-1], end)
    torch.testing.assert_close(inputs[2], torch.full((3, 4, 4), 0.5))
    assert torch.equal(velocity, end - start)
    sweep, u = sweep_line((3, 4, 4), points=5, seed=1, span=2.0)
    torch.testing.assert_close(sweep[4] - sweep[0], 4.0 * u)
    torch.testing.assert_close(sweep[2], torch.full((3, 4, 4), 0.5))


@pytest.mark.parametrize("layers", ["torch", "scratch"])
def test_batchnorm_calibration_sets_the_batch_statistics(layers):
    model = _net("plain20", layers)
    images = torch.rand(10, 3, 32, 32)
    calibrated = calibrate_batchnorm(copy.deepcopy(model).eval(), images)
    assert not calibrated.training and calibrated.bn1.momentum == model.bn1.momentum
    with torch.no_grad():  # the stem BN's input, by hand: normalise, then the first conv
        h = model.conv1(model.normalize(images))
    torch.testing.assert_close(calibrated.bn1.running_mean, h.mean((0, 2, 3)))
    torch.testing.assert_close(calibrated.bn1.running_var, h.var((0, 2, 3), unbiased=True))


def test_a_deep_plain_net_at_init_shatters_more_than_a_residual_one():
    """The paper's claim at a small scale (3 seeds, 56 layers, quarter width): lower lag-1
    correlation of the input gradient without skip connections."""
    lag1 = {}
    for name in ("plain56", "resnet56"):
        values = []
        for seed in range(3):
            torch.manual_seed(seed)
            model = reslab.create_model(name, width=0.25)
            inputs, u = sweep_line((3, 32, 32), points=64, seed=seed)
            result = shattering(model, inputs, u, calibrate=True, max_lag=4)
            assert len(result.derivative) == 64 and len(result.block_grad_norms) == 27
            values.append(result.lag1)
        lag1[name] = sum(values) / 3
    assert lag1["resnet56"] > lag1["plain56"] + 0.1, lag1
