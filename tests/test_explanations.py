"""Measured explanations: deletion/insertion curves (Petsiuk et al. 2018) and the cascading
model randomisation (Adebayo et al. 2018), against references written here: trapezoids
and pixel orders worked out by hand, a linear model whose true pixel relevance is known,
torchvision's Gaussian blur, Spearman's formula, and state dicts compared bit for bit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

from conftest import randomize_bn
from reslab import create_model
from reslab.analysis import (
    curve_auc,
    deletion_insertion,
    explanations_report,
    perturbation_curves,
    randomization_check,
    randomized_cascade,
    rank_correlation,
)
from reslab.analysis.explanations import layer_grid
from reslab.analysis.faithfulness import (
    baseline_images,
    gaussian_blur,
    pixel_order,
    random_maps,
    step_counts,
)
from reslab.analysis.sanity import cascade_stages, randomize_modules

pytestmark = pytest.mark.usefixtures("one_thread")


class PixelLinear(nn.Module):
    """Logits ``(0, w·x + b)``: the probability of class 1 is ``sigmoid(w·x + b)``."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(weight.clone())
        self.b = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1) + self.b
        return torch.stack([torch.zeros_like(score), score], 1)


class Recorder(nn.Module):
    """Keeps every image it is given; the logit of class 1 is the sum of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.extend(x.clone())
        s = x.flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


# ----------------------------------------------------------------------------- the curve
def test_auc_is_the_trapezoid_worked_out_by_hand():
    values = torch.tensor(
        [[1.0, 0.5, 0.5, 0.0, 0.0], [0.2, 0.4, 0.6, 0.8, 1.0]], dtype=torch.float64
    )
    quarters = [0.0, 0.25, 0.5, 0.75, 1.0]
    # 0.25 * ((1 + .5) + (.5 + .5) + (.5 + 0) + (0 + 0)) / 2 = 0.375; a straight line: 0.6
    assert curve_auc(quarters, values).tolist() == pytest.approx([0.375, 0.6], abs=1e-12)
    # Uneven steps, as on 10 pixels in 4 steps: fractions 0, .2, .5, .7, 1
    uneven = [0.0, 0.2, 0.5, 0.7, 1.0]
    by_hand = 0.2 * (1 + 0.5) / 2 + 0.3 * (0.5 + 0.5) / 2 + 0.2 * (0.5 + 0) / 2 + 0.3 * 0
    assert float(curve_auc(uneven, values[:1])[0]) == pytest.approx(by_hand, abs=1e-12)
    with pytest.raises(ValueError, match="4 fractions for curves of 5 points"):
        curve_auc(uneven[:4], values)


def test_step_counts_are_floor_of_i_pixels_over_steps():
    assert step_counts(9, 4) == [0, 2, 4, 6, 9]  # 9/4 = 2.25 per step
    assert step_counts(10, 4) == [0, 2, 5, 7, 10]
    assert step_counts(4, 4) == [0, 1, 2, 3, 4]
    assert step_counts(784, 20)[:3] == [0, 39, 78] and step_counts(784, 20)[-1] == 784
    for bad in (0, 10):
        with pytest.raises(ValueError, match="steps must be between 1 and the 9 pixels"):
            step_counts(9, bad)


TINY_MAP = torch.tensor([[0.1, 0.9, 0.5], [0.9, 0.0, 0.3], [0.2, 0.5, 0.7]])
# Descending; the two 0.9s and the two 0.5s keep their row-major order.
TINY_ORDER = [1, 3, 8, 2, 7, 5, 6, 0, 4]


def test_pixel_order_on_a_tiny_map():
    assert pixel_order(TINY_MAP[None]).tolist() == [TINY_ORDER]


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_each_step_changes_exactly_the_pixels_worked_out_by_hand(kind):
    image = torch.arange(1.0, 19.0).view(1, 2, 3, 3) / 10  # two channels, 3x3
    fill = -torch.ones_like(image)  # a baseline no pixel of the image has
    model = Recorder()
    curve = perturbation_curves(
        model, image, TINY_MAP[None], torch.tensor([1]), kind=kind, steps=4, baseline=fill
    )
    assert len(model.seen) == 5 and curve.shape == (1, 5)
    for i, k in enumerate([0, 2, 4, 6, 9]):
        expected = image[0].clone() if kind == "deletion" else fill[0].clone()
        for p in TINY_ORDER[:k]:  # every channel of pixel p
            r, c = divmod(p, 3)
            expected[:, r, c] = fill[0, :, r, c] if kind == "deletion" else image[0, :, r, c]
        assert torch.equal(model.seen[i], expected), f"step {i}"
        assert float(curve[0, i]) == pytest.approx(float(torch.sigmoid(expected.sum())), abs=1e-6)


def test_the_true_relevance_of_a_linear_model_beats_a_random_map():
    g = torch.Generator().manual_seed(3)
    n, h = 12, 8
    images = torch.rand(n, 1, h, h, generator=g)
    w = torch.randn(1, h, h, generator=g) * 0.4
    model = PixelLinear(w, bias=0.5)
    # A removed pixel takes the image's mean: its true contribution to the logit is
    # w_p * (x_p - mean), exactly (the model is linear).
    relevance = (w * (images - images.mean((2, 3), keepdim=True)))[:, 0]
    target = torch.ones(n, dtype=torch.long)
    rand = random_maps(n, h, h, seed=0)
    curves = {}
    for kind in ("deletion", "insertion"):
        for name, maps in (("true", relevance), ("random", rand)):
            curves[kind, name] = perturbation_curves(
                model, images, maps, target, kind=kind, steps=16, baseline="mean"
            )
    fractions = [k / 64 for k in step_counts(64, 16)]
    auc = {key: curve_auc(fractions, c) for key, c in curves.items()}
    # Removing the largest contributions first is the fastest way down at every step (and
    # revealing them first the fastest way up): pointwise, so for every image's AUC.
    assert (curves["deletion", "true"] <= curves["deletion", "random"] + 1e-6).all()
    assert (curves["insertion", "true"] >= curves["insertion", "random"] - 1e-6).all()
    assert (auc["deletion", "true"] < auc["deletion", "random"]).all()
    assert (auc["insertion", "true"] > auc["insertion", "random"]).all()
    assert auc["deletion", "true"].mean() < auc["deletion", "random"].mean() - 0.1
    # Both curves end where they must: the mean image, and the image itself.
    p_image = torch.sigmoid((images * w).flatten(1).sum(1) + 0.5)
    p_mean = torch.sigmoid((images.mean((2, 3), keepdim=True) * w).flatten(1).sum(1) + 0.5)
    for name in ("true", "random"):
        torch.testing.assert_close(curves["deletion", name][:, 0], p_image)
        torch.testing.assert_close(curves["deletion", name][:, -1], p_mean)
        torch.testing.assert_close(curves["insertion", name][:, 0], p_mean)
        torch.testing.assert_close(curves["insertion", name][:, -1], p_image)


def test_coarse_random_maps_are_bilinear_blobs_on_the_layer_grid():
    coarse = random_maps(3, 4, 4, seed=2, grid=(2, 2))
    values = torch.rand(3, 1, 2, 2, generator=torch.Generator().manual_seed(2))[:, 0]
    # Upsampling 2 -> 4 (align_corners=False) samples the grid at -0.25, 0.25, 0.75, 1.25
    # (the ends clamped): weights per output row/column, by hand.
    weights = torch.tensor([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    torch.testing.assert_close(coarse, weights @ values @ weights.T)
    model = create_model("resnet20", num_classes=3, width=0.25)
    assert layer_grid(model, torch.rand(1, 3, 32, 32)) == (8, 8)  # layer3 of a CIFAR net
    assert layer_grid(model, torch.rand(1, 3, 28, 28), "layer2") == (14, 14)
    assert layer_grid(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.rand(1, 3, 2, 2)) is None


def test_baselines_against_torchvision_and_by_hand():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 40, 40, generator=g)
    sigma = 0.05 * 40  # the default blur: 5 % of the shorter side
    radius = math.ceil(3 * sigma)
    ours = baseline_images(images, "blur")
    reference = TF.gaussian_blur(images, [2 * radius + 1] * 2, [sigma, sigma])
    inner = slice(radius, 40 - radius)  # away from the edges, where padding differs
    torch.testing.assert_close(ours[..., inner, inner], reference[..., inner, inner])
    constant = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)
    mean = baseline_images(images, "mean")
    for c in range(3):
        assert torch.allclose(mean[1, c], images[1, c].mean().expand(40, 40))
    with pytest.raises(ValueError, match="unknown baseline 'noise'"):
        baseline_images(images, "noise")


def test_deletion_insertion_end_points_are_the_model_on_the_image_and_the_baseline():
    model = create_model("resnet20", num_classes=4, width=0.25, in_chans=1)
    randomize_bn(model)
    images = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    before = copy.deepcopy(model.state_dict())
    faith = deletion_insertion(model, images, steps=4, baseline="mean", methods=["saliency"])
    randomization_check(model, images, methods=["gradcam", "saliency"])
    # Left as it was: train mode, no gradients, the same weights and statistics.
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.eval()
    with torch.no_grad():
        probs = model(images).softmax(1)
        mean = images.mean((2, 3), keepdim=True).expand_as(images)
        probs_mean = model(mean).softmax(1)
    top1 = probs.argmax(1)
    assert faith.methods == ["saliency", "random", "random-coarse"]
    assert faith.target.tolist() == top1.tolist()
    assert faith.fractions == [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = torch.arange(3)
    for m in faith.methods:
        torch.testing.assert_close(faith.deletion[m][:, 0], probs[rows, top1])
        torch.testing.assert_close(faith.deletion[m][:, -1], probs_mean[rows, top1])
        torch.testing.assert_close(faith.insertion[m][:, 0], probs_mean[rows, top1])
        torch.testing.assert_close(faith.insertion[m][:, -1], probs[rows, top1])
    report = explanations_report(faith, None, model="tiny")
    auc = report["faithfulness"]["deletion"]["saliency"]["auc"]
    per_image = curve_auc(faith.fractions, faith.deletion["saliency"])
    assert auc["mean"] == pytest.approx(float(per_image.mean()))
    assert auc["std"] == pytest.approx(float(per_image.std()))  # sample std (n - 1)
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        deletion_insertion(model, images, methods=["lime"])


# ----------------------------------------------------------------------------- correlation
def test_rank_correlation_by_hand_with_ties():
    a = torch.tensor([[1.0, 2.0, 2.0, 4.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 5.0]])
    # ranks a: 1, 2.5, 2.5, 4; ranks b: 1, 3, 2, 4; centred: (-1.5, 0, 0, 1.5) and
    # (-1.5, .5, -.5, 1.5): 4.5 / sqrt(4.5 * 5)
    assert float(rank_correlation(a, b)[0]) == pytest.approx(4.5 / math.sqrt(22.5), abs=1e-12)
    # Constant rows carry no ranking: 0. Order-reversed: -1.
    flat = torch.zeros(1, 4)
    assert rank_correlation(flat, b).tolist() == [0.0] == rank_correlation(b, flat).tolist()
    assert float(rank_correlation(b, -b)[0]) == pytest.approx(-1.0)


def test_rank_correlation_without_ties_is_spearmans_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 3, 7, generator=g), torch.rand(5, 3, 7, generator=g)
    n = 21
    ra = a.flatten(1).argsort(1).argsort(1).double()
    rb = b.flatten(1).argsort(1).argsort(1).double()
    formula = 1 - 6 * ((ra - rb) ** 2).sum(1) / (n * (n * n - 1))
    torch.testing.assert_close(rank_correlation(a, b), formula)
    pearson = torch.stack([torch.corrcoef(torch.stack([x, y]))[0, 1] for x, y in zip(ra, rb)])
    torch.testing.assert_close(rank_correlation(a, b), pearson)


# ----------------------------------------------------------------------------- randomisation
def trained_looking(model: nn.Module) -> nn.Module:
    """Every parameter and BN statistic away from its initial value."""
    randomize_bn(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_the_cascade_of_a_resnet_goes_from_the_head_down():
    model = create_model("resnet20", num_classes=4, width=0.25)
    expected = [("head", ["fc"]), ("layer3", ["layer3"]), ("layer2", ["layer2"]),
                ("layer1", ["layer1"]), ("stem", ["conv1", "bn1"])]  # fmt: skip
    assert cascade_stages(model) == expected
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    plain(torch.zeros(1, 1, 5, 5))
    assert cascade_stages(plain) == [("3", ["3"]), ("0", ["0"])]


def test_randomisation_changes_each_stage_in_turn_and_never_the_model():
    model = trained_looking(create_model("resnet20", num_classes=4, width=0.25))
    model.train()
    frozen = model.layer1[0].conv1.weight
    frozen.requires_grad_(False)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    stages = cascade_stages(model)
    done: list[str] = []
    for (label, randomized), (_, modules) in zip(randomized_cascade(model, seed=5), stages):
        assert randomized is not model
        done += modules
        state = randomized.state_dict()
        for key, value in original.items():
            if value.dtype == torch.long:  # BN's num_batches_tracked
                continue
            changed = not torch.equal(state[key], value)
            assert changed == any(key.startswith(m + ".") for m in done), (label, key)
    assert done == ["fc", "layer3", "layer2", "layer1", "conv1", "bn1"]
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in original.items())  # bit-identical
    assert model.training and all(m.training for m in model.modules())
    assert not frozen.requires_grad and torch.equal(torch.get_rng_state(), rng)


def test_the_check_flags_maps_that_do_not_depend_on_the_randomised_weights():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(36, 3)
            self.unused = nn.Linear(4, 4)  # never called: randomising it changes nothing

        def forward(self, x):
            return self.fc(x.flatten(1))

    model = Net()
    images = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    same = randomization_check(model, images, methods=["saliency"], stages=[("u", ["unused"])])
    assert same.correlation["saliency"].tolist() == [[1.0] * 4]
    assert same.flagged() == ["saliency"] and same.agreement == [1.0]
    check = randomization_check(
        model, images, methods=["saliency"], stages=[("fc", ["fc"])], seed=7, examples=2
    )
    # The saliency of a linear model is |W[target]|; the randomised W is fc re-drawn with
    # seed 7 (the first stage's seed).
    redrawn = randomize_modules(copy.deepcopy(model), ["fc"], seed=7)
    target = model(images).argmax(1)
    before = model.fc.weight[target].abs().detach().view(4, 6, 6)
    after = redrawn.fc.weight[target].abs().detach().view(4, 6, 6)
    torch.testing.assert_close(
        check.correlation["saliency"][0], rank_correlation(before, after).float()
    )
    assert check.maps["saliency"].shape == (2, 2, 6, 6)  # (trained + 1 step, 2 images)
    assert float(check.correlation["saliency"].mean().abs()) < 0.5 and check.flagged() == []
    report = explanations_report(None, check)["randomization"]
    assert report["steps"][0]["modules"] == ["fc"] and report["flagged"] == []
    assert report["steps"][0]["correlation"]["saliency"]["mean"] == pytest.approx(
        float(check.correlation["saliency"][0].double().mean())
    )
