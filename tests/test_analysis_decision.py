"""Decision regions: sectors of bias-free heads, grid orientation, heads, the PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from reslab.analysis import (
    Plane,
    axis_planes,
    cone_disagreement,
    decision_map,
    example_planes,
    fit_head,
    head_accuracy,
    linear_head,
    plot_decision_regions,
    vgg_head,
)

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.tuples(finite, finite), min_size=2, max_size=12),
    point=st.tuples(finite, finite),
    scale=st.floats(1e-3, 1e3),
)
def test_positive_scaling_never_changes_the_class_of_a_bias_free_linear_head(weights, point, scale):
    head = linear_head(2, len(weights)).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor(weights, dtype=torch.float64))
    x = torch.tensor([point], dtype=torch.float64)
    with torch.no_grad():
        scores = head(x)[0]
    top2 = scores.topk(2).values
    # Exact ties (or rounding-level ones) have no well-defined argmax; skip them.
    assume(float(top2[0] - top2[1]) > 1e-9 * (1 + float(scores.abs().max())))
    assert int(head(scale * x).argmax()) == int(scores.argmax())


def test_decision_map_matches_the_angle_reference_and_orientation():
    # Three class vectors at 90, 210 and 330 degrees: each owns the 120-degree sector around
    # its direction. Reference: the class from each grid point's angle alone.
    angles = torch.tensor([90.0, 210.0, 330.0]) * math.pi / 180
    head = linear_head(2, 3)
    with torch.no_grad():
        head.weight.copy_(torch.stack([angles.cos(), angles.sin()], 1))
    res, extent = 101, 2.0
    got = decision_map(head, extent=extent, resolution=res).numpy()
    ticks = np.linspace(-extent, extent, res)
    a, b = np.meshgrid(ticks, ticks)  # rows: b from bottom (-extent) to top
    theta = np.degrees(np.arctan2(b, a)) % 360
    expected = np.select([(theta >= 30) & (theta < 150), (theta >= 150) & (theta < 270)], [0, 1], 2)
    on_boundary = np.isin(np.round(theta, 6), [30.0, 150.0, 270.0]) | ((a == 0) & (b == 0))
    assert (got[~on_boundary] == expected[~on_boundary]).all()
    assert got[-1, res // 2] == 0 and got[0, res // 2] != 0  # top row is +b: class 0 (up)


def test_cone_disagreement_is_zero_exactly_for_homogeneous_heads():
    torch.manual_seed(0)
    assert cone_disagreement(linear_head(2, 7)) == 0.0
    # A ReLU MLP without biases is positively homogeneous too: f(c x) = c f(x).
    mlp = nn.Sequential(nn.Linear(2, 32, bias=False), nn.ReLU(), nn.Linear(32, 5, bias=False))
    assert cone_disagreement(mlp, extent=3.0) == 0.0
    # An untrained VGG-style head with VGG's init (zero biases) as well, on any slice.
    head = vgg_head(40, 6, hidden=(32, 32))
    plane = axis_planes(40, [(3, 17)])[0]
    assert cone_disagreement(head, plane, extent=5.0) == 0.0
    # Random biases (nn.Linear's default init) bend the regions near the origin.
    assert cone_disagreement(vgg_head(40, 6, hidden=(32, 32), init="torch"), plane) > 0.01


def test_a_biased_boundary_misses_the_origin():
    # Class 0 iff a + 0.5 > -a, i.e. a > -0.25: a vertical line left of the origin.
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        head.bias.copy_(torch.tensor([0.5, 0.0]))
    grid = decision_map(head, extent=1.0, resolution=81)  # column c is a = -1 + c / 40
    assert (grid[:, 31:] == 0).all() and (grid[:, :30] == 1).all()
    assert cone_disagreement(head) > 0.0


def test_planes():
    (p,) = axis_planes(5, [(1, 3)], origin=torch.arange(5.0))
    assert p.u.tolist() == [0, 1, 0, 0, 0] and p.v.tolist() == [0, 0, 0, 1, 0]
    assert p.origin.tolist() == [0, 1, 2, 3, 4] and p.label == "dims 1, 3"
    with pytest.raises(ValueError, match="distinct"):
        axis_planes(5, [(2, 2)])
    with pytest.raises(ValueError, match="distinct"):
        axis_planes(5, [(0, 5)])
    x = torch.rand(5, 1, 2, 2)
    planes = example_planes(x, list("abcde"))
    assert len(planes) == 2 and planes[1].label == "c / d"
    torch.testing.assert_close(planes[1].u, x[2].flatten())
    # The point (1, 0) of an example plane is the first example itself: same class.
    head = nn.Sequential(nn.Linear(4, 3))
    m = decision_map(head, planes[0], extent=1.0, resolution=3)
    assert int(m[1, 2]) == int(head(x[0].flatten()[None]).argmax())
    with pytest.raises(ValueError, match="two examples"):
        example_planes(x[:1])
    with pytest.raises(ValueError, match="2-D slice"):
        decision_map(head)


def test_vgg_head_shape_and_init():
    head = vgg_head(30, 4, hidden=(16, 8), dropout=0.3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [(m.in_features, m.out_features) for m in head[::3]] == [(30, 16), (16, 8), (8, 4)]
    assert head[-1].bias is None and head[2].p == 0.3
    assert all(float(m.bias.detach().abs().max()) == 0 for m in head[:-1:3])
    big = vgg_head(2000, 10, hidden=(1000,))
    assert abs(float(big[0].weight.detach().std()) - 0.01) < 5e-4
    with pytest.raises(ValueError, match="init"):
        vgg_head(3, 2, init="xavier")


def test_fit_head_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 10, generator=g) * 3
    y = torch.randint(0, 4, (800,), generator=g)
    x = centers[y] + torch.randn(800, 10, generator=g)
    head = vgg_head(10, 4, hidden=(32,), dropout=0.1)
    assert head_accuracy(head, x, y) < 0.6
    losses = fit_head(head, x[:600], y[:600], epochs=15, lr=3e-3, batch_size=64)
    assert losses[-1] < losses[0]
    assert head_accuracy(head, x[600:], y[600:]) > 0.95


def test_plot_colours_each_class_consistently(tmp_path):
    from matplotlib import colormaps
    from PIL import Image

    # "updown": class 0 above the a-axis, 1 below; "leftright": class 0 right, 1 left. The
    # same class must get the same colour in both, and up must be up in the picture.
    updown = nn.Linear(2, 2, bias=False)
    leftright = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        updown.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, -1.0]]))
        leftright.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    path = tmp_path / "sub" / "regions.png"
    fig = plot_decision_regions(
        {"updown": updown, "leftright": leftright},
        class_names=["zero", "one"],
        path=path,
        title="t",
    )
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 150
    blue, orange = (np.array(colormaps["tab10"].colors[i]) * 255 for i in (0, 1))
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    height = img.shape[0]
    # (fraction across, fraction up, expected colour); display y runs bottom-up, PNG rows down.
    probes = [
        [(0.5, 0.8, blue), (0.5, 0.2, orange)],
        [(0.8, 0.5, blue), (0.2, 0.5, orange)],
    ]
    for ax, checks in zip(panels, probes):
        box = ax.get_window_extent()  # display pixels at the save dpi
        for fx, fy, colour in checks:
            x = int(box.x0 + fx * box.width)
            y = int(height - (box.y0 + fy * box.height))
            assert np.abs(img[y, x] - colour).max() < 3, (ax.get_title(), fx, fy, img[y, x])


def test_plot_grid_of_slices(tmp_path):
    planes = axis_planes(12, [(0, 1), (2, 3), (4, 5)])
    fig = plot_decision_regions(
        {"a": vgg_head(12, 3, hidden=(8,)), "b": vgg_head(12, 3, hidden=(8,), init="torch")},
        planes,
        ncols=2,
        resolution=20,
        path=tmp_path / "grid.png",
    )
    titled = [ax.get_title() for ax in fig.axes if ax.images]
    assert titled == ["dims 0, 1", "dims 2, 3", "dims 4, 5"] * 2
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no heads"):
        plot_decision_regions({})


def test_plane_marks_are_drawn():
    x = torch.rand(2, 6)
    (plane,) = example_planes(x)
    assert plane.marks == ((1.0, 0.0), (0.0, 1.0))
    fig = plot_decision_regions(nn.Linear(6, 3), [plane], resolution=10)
    (ax,) = [a for a in fig.axes if a.images]
    points = {tuple(line.get_xydata()[0]) for line in ax.lines}
    assert {(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)} <= points
    assert isinstance(plane, Plane)


def test_dropout_is_off_while_mapping_and_the_mode_is_restored():
    head = vgg_head(8, 3, hidden=(64,), dropout=0.9, init="torch").train()
    plane = axis_planes(8, [(0, 1)])[0]
    first = decision_map(head, plane, resolution=30)
    assert head.training
    torch.testing.assert_close(decision_map(head, plane, resolution=30), first)
