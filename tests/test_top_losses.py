"""top_losses against losses computed here with torch, and the PNG grid it is drawn as."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import reslab
from conftest import randomize_bn
from reslab.analysis.gradcam import gradcam
from reslab.analysis.top_losses import TopLoss, plot_top_losses, top_losses, top_losses_figure

pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_data(n=20, num_classes=10, in_chans=3):
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=num_classes, in_chans=in_chans)
    model = randomize_bn(model).eval()
    images = torch.rand(n, in_chans, 32, 32)
    labels = torch.randint(0, 10, (n,))
    return model, images, labels


def expected_order(model, images, labels, logits_subset=None):
    with torch.no_grad():
        logits = model(images)
    if logits_subset is not None:
        logits = logits[:, logits_subset]
    losses = torch.stack(
        [F.cross_entropy(logits[i : i + 1], labels[i : i + 1]) for i in range(len(labels))]
    )
    order = sorted(range(len(labels)), key=lambda i: (-float(losses[i]), i))
    return order, logits, losses


def test_top_losses_are_the_highest_cross_entropies():
    model, images, labels = model_and_data()
    order, logits, losses = expected_order(model, images, labels)
    items = top_losses(model, (images, labels), 5, batch_size=3)  # streamed over 7 batches
    assert [it.index for it in items] == order[:5]
    probs = logits.softmax(1)
    for it in items:
        i = it.index
        assert torch.equal(it.image, images[i])
        assert it.true == int(labels[i])
        assert it.pred == int(logits[i].argmax())
        assert it.prob == pytest.approx(float(probs[i].max()), abs=1e-6)
        assert it.loss == pytest.approx(float(losses[i]), abs=1e-5)
        assert it.cam.shape == (32, 32)
    assert [it.loss for it in items] == sorted((it.loss for it in items), reverse=True)
    # The maps are the predicted class's (not the true class's).
    idx = [it.index for it in items]
    cams = torch.stack([it.cam for it in items])
    pred = torch.tensor([it.pred for it in items])
    torch.testing.assert_close(cams, gradcam(model, images[idx], pred), atol=1e-5, rtol=0)
    wrong = [k for k, it in enumerate(items) if it.pred != it.true]
    assert wrong and not torch.allclose(
        cams[wrong], gradcam(model, images[idx], labels[idx])[wrong]
    )


def test_loader_equals_tensors_and_model_left_alone():
    model, images, labels = model_and_data()
    model.train()
    loader = [(images[i : i + 4], labels[i : i + 4]) for i in range(0, 20, 4)]
    a = top_losses(model, loader, 4)
    assert model.training and all(m.training for m in model.modules())
    b = top_losses(model, (images, labels), 4, batch_size=64)
    assert [x.index for x in a] == [x.index for x in b]
    order, _, _ = expected_order(model.eval(), images, labels)
    assert [x.index for x in a] == order[:4]
    assert len(top_losses(model, (images, labels), 50)) == 20


def test_only_wrong_and_class_index():
    model, images, labels = model_and_data(num_classes=20)
    subset = [3, 5, 7, 11, 13, 2, 19, 0, 8, 9]
    order, logits, _ = expected_order(model, images, labels, subset)
    wrong = [i for i in order if int(logits[i].argmax()) != int(labels[i])]
    items = top_losses(model, (images, labels), 6, only_wrong=True, class_index=subset)
    assert [it.index for it in items] == wrong[:6]
    assert all(it.pred != it.true and 0 <= it.pred < 10 for it in items)
    # The map is of the model's class behind the predicted data label.
    it = items[0]
    ref = gradcam(model, it.image[None], subset[it.pred])[0]
    torch.testing.assert_close(it.cam, ref, atol=1e-5, rtol=0)


def test_bad_arguments():
    model, images, labels = model_and_data()
    with pytest.raises(ValueError, match="n must be positive"):
        top_losses(model, (images, labels), 0)
    with pytest.raises(ValueError, match="out of range"):
        top_losses(model, (images, labels + 10), 3)
    with pytest.raises(ValueError, match="images but"):
        top_losses(model, (images, labels[:5]), 3)
    with pytest.raises(ValueError, match="empty"):
        top_losses(model, [], 3)


def fake_items(k, channels):
    g = torch.Generator().manual_seed(1)
    return [
        TopLoss(i, torch.rand(channels, 32, 32, generator=g), i % 3, (i + 1) % 3, 0.9, 2.0,
                torch.rand(32, 32, generator=g))
        for i in range(k)
    ]  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_top_losses_writes_a_png_atomically(tmp_path, channels):
    out = tmp_path / "figs" / "top.png"
    assert plot_top_losses(fake_items(5, channels), ["cat", "dog", "fox"], out) == out
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape[0] > 400 and grid.shape[1] > 600  # 2 rows x 3 columns at 110 dpi
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 100  # images and maps drawn
    assert sorted(p.name for p in out.parent.iterdir()) == ["top.png"]  # no temp files
    plot_top_losses(fake_items(1, channels), None, out)  # replaced whole
    single = np.asarray(Image.open(out).convert("RGB"))
    assert single.shape[0] < grid.shape[0] and single.shape[1] < grid.shape[1]


def test_figure_titles_and_overlay():
    items = fake_items(4, 3)
    fig = top_losses_figure(items, ["cat", "dog"], ncols=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["cat / dog / 0.90", "dog / 2 / 0.90", "2 / cat / 0.90", "cat / dog / 0.90"]
    ax = fig.axes[1]
    picture, heat = ax.get_images()
    np.testing.assert_allclose(picture.get_array(), items[1].image.permute(1, 2, 0).numpy())
    np.testing.assert_allclose(heat.get_array(), items[1].cam.numpy())
    assert 0 < heat.get_alpha() < 1


def test_plot_failure_leaves_no_temp_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "x").write_text("")
    with pytest.raises(OSError):
        plot_top_losses(fake_items(2, 3), None, target)  # a non-empty folder cannot be replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    with pytest.raises(ValueError, match="no items"):
        plot_top_losses([], None, tmp_path / "a.png")
