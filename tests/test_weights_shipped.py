"""reslab's own weights shipped in the package: small, verified, usable offline."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import reslab
from conftest import shared_data_dir
from reslab.weights import WeightsError, read_checkpoint_config
from reslab.weights.catalog import ASSETS, list_tags

MANIFEST = json.loads((ASSETS / "manifest.json").read_text())


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_shipped_file_is_small_verified_and_documented(entry):
    path = ASSETS / entry["file"]
    assert path.stat().st_size <= 5 * 2**20
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    state = read_checkpoint_config(path)["state"]
    assert state["recipe"] == entry["recipe"] and entry["recipe"].startswith("reslab train ")
    top1 = next(iter(entry["metrics"].values()))
    assert state["metrics"]["test_accuracy"] == pytest.approx(top1 / 100)
    assert f"{entry['model']}@{entry['tag']}" in {t.key for t in list_tags()}


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_tag_builds_the_saved_model(entry):
    model = reslab.create_model(entry["model"], pretrained=entry["tag"]).eval()
    saved = reslab.load_checkpoint(ASSETS / entry["file"]).eval()
    x = torch.rand(2, model.in_chans, *model.default_cfg["input_size"][1:])
    torch.testing.assert_close(model(x), saved(x))
    assert len(model.default_cfg["class_names"]) == model.num_classes


def test_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from reslab.weights import catalog as tags

    entry = MANIFEST[0]
    copy = tmp_path / entry["file"]
    shutil.copy(ASSETS / entry["file"], copy)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(tags, "ASSETS", tmp_path)
    with pytest.raises(WeightsError, match="corrupt"):
        tags.find_tag(f"{entry['model']}@{entry['tag']}").fetch()


@pytest.mark.slow
@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: f"{e['model']}@{e['tag']}")
def test_shipped_weights_reach_their_stated_accuracy(entry):
    from reslab.data import load_dataset, make_loader
    from reslab.data.locate import DataNotFoundError
    from reslab.training.metrics import evaluate

    data = entry["tag"].removeprefix("reslab-")
    try:
        test = load_dataset(
            data, "test", data_dir=shared_data_dir(), download=False, progress=False
        )
    except DataNotFoundError:
        pytest.skip(f"{data} not on this machine")
    model = reslab.create_model(entry["model"], pretrained=entry["tag"])
    result = evaluate(model, make_loader(test, 500, train=False))
    stated = next(iter(entry["metrics"].values())) / 100
    assert result.accuracy == pytest.approx(stated, abs=5e-4)
