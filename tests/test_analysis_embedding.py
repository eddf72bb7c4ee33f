"""split_class_embedding and the bias report, against the models' own forward passes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from conftest import randomize_bn
from reslab import create_model
from reslab.analysis import class_embedding_report, split_class_embedding

# Small tensors: one thread (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _check_split(model: nn.Module, x: torch.Tensor, fc: nn.Linear) -> None:
    model.eval()
    backbone, table, bias = split_class_embedding(model)
    assert isinstance(table, nn.Embedding)
    assert table.weight.shape == (fc.out_features, fc.in_features)
    with torch.no_grad():
        logits = model(x)
        emb = backbone(x)
        torch.testing.assert_close(emb @ table.weight.T, logits - fc.bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bias, fc.bias.detach())


def test_reslab_resnet_logits_minus_bias():
    model = randomize_bn(create_model("resnet18", num_classes=10))
    with torch.no_grad():
        model.fc.bias.uniform_(-0.5, 0.5)  # a bias large enough to matter
    _check_split(model, torch.rand(2, 3, 64, 64), model.fc)


def test_torchvision_and_timm_models_via_the_classifier_hook():
    import timm  # in the `test` extra: missing is a broken install, not a skip

    tv = randomize_bn(torchvision.models.resnet18(num_classes=7))
    _check_split(tv, torch.rand(2, 3, 64, 64), tv.fc)
    tm = randomize_bn(timm.create_model("resnet18", num_classes=5))
    _check_split(tm, torch.rand(2, 3, 64, 64), tm.fc)


def test_vgg_style_classifier_uses_its_last_linear():
    # VGG keeps its head in `classifier` (Linear-ReLU-Dropout-...-Linear): the class embedding
    # is the last Linear and the image embedding is that layer's input.
    class TinyVGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.classifier = nn.Sequential(
                nn.Linear(16, 12), nn.ReLU(), nn.Dropout(), nn.Linear(12, 6)
            )

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    model = TinyVGG()
    _check_split(model, torch.rand(3, 3, 16, 16), model.classifier[3])


def test_class_embedding_shares_the_classifier_weight():
    model = create_model("resnet20", num_classes=4)
    _, table, _ = split_class_embedding(model)
    assert table.weight is model.fc.weight
    torch.testing.assert_close(table(torch.tensor([2]))[0], model.fc.weight[2])
    with torch.no_grad():
        table.weight[1].zero_()
    assert model.fc.weight[1].abs().sum() == 0


def test_bias_free_classifier_and_headless_model():
    model = create_model("resnet20", num_classes=3)
    model.fc = nn.Linear(model.num_features, 3, bias=False)
    assert split_class_embedding(model).bias is None
    with pytest.raises(ValueError, match="no linear classifier"):
        split_class_embedding(create_model("resnet20", num_classes=0))


def test_report_bias_statistics_by_hand():
    model = create_model("resnet20", num_classes=4)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.05, -0.02, 0.10, -0.30]))
    r = class_embedding_report(model)
    assert (r.num_classes, r.dim) == (4, 64)
    assert r.bias_min == pytest.approx(-0.30) and r.bias_argmin == 3
    assert r.bias_max == pytest.approx(0.10) and r.bias_argmax == 2
    assert r.bias_mean == pytest.approx(-0.0425)
    assert r.examples == 0 and r.top1_change_rate == 0.0
    assert "min -0.3000 (class 3 (d))" in r.format(["a", "b", "c", "d"])


def test_report_top1_changes():
    model = randomize_bn(create_model("resnet20", num_classes=5)).eval()
    x = torch.rand(24, 3, 32, 32)
    y = torch.randint(0, 5, (24,))
    # Reference predictions without the bias: the model itself with its bias zeroed.
    with torch.no_grad():
        saved = model.fc.bias.clone()
        model.fc.bias.zero_()
        no_bias_pred = model(x).argmax(1)
        # A zero bias changes nothing.
        r0 = class_embedding_report(model, [(x, y)])
        assert r0.examples == 24 and r0.top1_changed == 0
        # A huge bias on class 3 makes every biased prediction 3: exactly the images whose
        # bias-free top-1 is not 3 change, and only labels equal to 3 are right with the bias.
        model.fc.bias.copy_(saved)
        model.fc.bias[3] = 1e4
    r = class_embedding_report(model, [(x[:10], y[:10]), (x[10:], y[10:])])
    assert r.examples == 24
    assert r.top1_changed == int((no_bias_pred != 3).sum())
    assert r.correct_with_bias == int((y == 3).sum())
    assert r.correct_without_bias == int((no_bias_pred == y).sum())
    # Unlabelled batches and max_batches.
    r2 = class_embedding_report(model, [x[:10], x[10:]], max_batches=1)
    assert r2.examples == 10 and r2.correct_with_bias is None
