"""``reslab analyze blocks``: lesions against networks edited by hand, residual ratios against
a hand-written branch, stage features against ``model.features``; the command's files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reslab
from conftest import randomize_bn
from reslab.analysis.blocks import (
    StageFeatures,
    blocks_of,
    can_lesion,
    lesioned,
    residual_ratios,
    study_blocks,
)
from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(reslab.create_model(name)).eval()


def test_removing_a_block_whose_branch_is_zero_changes_nothing_at_all():
    model = _model("resnet20")
    block = model.layer2[1]
    with torch.no_grad():  # a branch that adds exactly zero
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        with lesioned(block):
            cut = model(x)
    assert torch.equal(cut, full)


def test_a_lesion_equals_the_network_with_the_block_replaced_by_its_shortcut():
    model = _model("resnet20")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        with lesioned(model.layer1[1]):
            cut = model(x)
        by_hand = copy.deepcopy(model)
        by_hand.layer1[1] = nn.Identity()  # identity shortcut; its input is >= 0 (after a ReLU)
        torch.testing.assert_close(cut, by_hand(x))
        # A downsampling block keeps its (option A) shortcut: subsample and zero-pad, then ReLU.
        with lesioned(model.layer2[0]):
            cut = model(x)
        by_hand = copy.deepcopy(model)
        shortcut = by_hand.layer2[0].downsample
        by_hand.layer2[0] = nn.Sequential(shortcut, nn.ReLU())
        torch.testing.assert_close(cut, by_hand(x))
    # The hook is gone afterwards.
    assert not model.layer1[1]._forward_hooks and not model.layer2[0]._forward_hooks


def test_plain_blocks_become_identities_where_shapes_allow():
    model = _model("plain20")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        with lesioned(model.layer3[2]):
            cut = model(x)
        by_hand = copy.deepcopy(model)
        by_hand.layer3[2] = nn.Identity()
        torch.testing.assert_close(cut, by_hand(x))
    assert not can_lesion(model.layer2[0]) and can_lesion(model.layer2[1])
    with pytest.raises(ValueError, match="changes shape"), lesioned(model.layer2[0]):
        pass


def test_residual_ratio_is_the_branch_norm_over_the_input_norm():
    model = _model("resnet20")
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        ratios = residual_ratios(model, [(x[:4], None), (x[4:], None)])
        h = model.forward_stem(x)
        h = model.layer1[0](h)  # the input of layer1.1
        block = model.layer1[1]
        branch = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(h)))))
    expected = (branch.flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1)).mean().item()
    assert ratios["layer1.1"] == pytest.approx(expected, rel=1e-5)
    assert list(ratios) == [name for name, _ in blocks_of(model)]


def test_stage_features_are_the_pooled_stage_outputs():
    model = _model("resnet18")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.features(x)
        for i, m in enumerate(maps):
            torch.testing.assert_close(StageFeatures(model, i)(x), m.mean((2, 3)))


def test_study_and_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=64, n_test=40)
    ckpt = reslab.save_checkpoint(
        tmp_path / "m.safetensors", reslab.create_model("resnet20", num_classes=10, in_chans=1)
    )
    code = main(["analyze", "blocks", str(ckpt), "--data", "fashion-mnist", "--data-dir",
                 str(data), "--probe-images", "32", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "blocks.json").read_text())
    assert set(report) == {"base_accuracy", "blocks", "stages"}
    assert [b["name"] for b in report["blocks"]][:2] == ["layer1.0", "layer1.1"]
    assert set(report["blocks"][0]) >= {"name", "downsample", "lesion_accuracy", "residual_ratio"}
    assert [s["name"] for s in report["stages"]] == ["layer1", "layer2", "layer3"]
    assert (tmp_path / "out" / "blocks.png").read_bytes()[:4] == b"\x89PNG"
    model = reslab.load_checkpoint(ckpt).eval()
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    with torch.no_grad():
        base = (model(x).argmax(1) == y).float().mean().item()
    assert study_blocks(model, [(x, y)])["base_accuracy"] == pytest.approx(base)
