"""Weights from URLs (a loopback HTTP server, never the internet), tags and checkpoints."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch
import torchvision

import reslab
from reslab.weights import WeightsError, weights_file
from reslab.weights.catalog import find_tag, imagenet_class_names, list_tags
from reslab.weights.sources import download_weights, parse_url_checksum


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []
    truncate: set[str] = set()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        _Handler.requests.append(self.path)
        name = self.path.lstrip("/")
        if name in _Handler.truncate:
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # the connection drops half way
            return
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    _Handler.requests = []
    _Handler.truncate = set()

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _tv_weights(root: Path, name: str = "w.pth") -> tuple[Path, str, dict]:
    state = torchvision.models.resnet18().state_dict()
    path = root / name
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), state


def test_url_download_is_verified_cached_and_loads(server, cache):
    root, base = server
    path, digest, state = _tv_weights(root)
    url = f"{base}/w.pth#sha256={digest}"
    model = reslab.create_model("resnet18", pretrained=url)
    torch.testing.assert_close(model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    cached = list(cache.iterdir())
    assert len(cached) == 1 and hashlib.sha256(cached[0].read_bytes()).hexdigest() == digest
    reslab.create_model("resnet18", pretrained=url)
    assert _Handler.requests == ["/w.pth"]  # the second use came from the cache


def test_wrong_checksum_is_refused_and_nothing_is_kept(server, cache):
    root, base = server
    _tv_weights(root)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download_weights(f"{base}/w.pth#sha256={'0' * 64}", progress=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_truncated_download_says_so_and_leaves_no_file(server, cache):
    root, base = server
    _, digest, _ = _tv_weights(root)
    _Handler.truncate.add("w.pth")
    with pytest.raises(WeightsError, match="truncated"):
        download_weights(f"{base}/w.pth#sha256={digest}", progress=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_hub_style_hash_prefix_is_checked_like_torchvision(server, cache):
    root, base = server
    path, digest, _ = _tv_weights(root)
    good = root / f"resnet18-{digest[:8]}.pth"
    path.rename(good)
    assert download_weights(f"{base}/{good.name}", progress=False).name == good.name
    bad = root / "resnet18-deadbeef.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        download_weights(f"{base}/{bad.name}", progress=False)


def test_url_without_checksum_or_offline_is_one_clear_error(cache):
    with pytest.raises(WeightsError, match="needs a checksum"):
        weights_file("http://127.0.0.1:9/weights.pth")
    with pytest.raises(WeightsError, match="cannot download"):
        download_weights(f"http://127.0.0.1:9/w.pth#sha256={'a' * 64}", progress=False)
    with pytest.raises(WeightsError, match="sha256"):
        parse_url_checksum("http://x/w.pth#md5=abc")


def test_corrupted_cache_entry_is_downloaded_again(server, cache):
    root, base = server
    _, digest, _ = _tv_weights(root)
    url = f"{base}/w.pth#sha256={digest}"
    first = download_weights(url, progress=False)
    first.write_bytes(b"garbage")
    again = download_weights(url, progress=False)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == digest
    assert len(_Handler.requests) == 2


def test_torchvision_tags_match_torchvision_enums():
    from torchvision import models as tvm

    enums = {
        "resnet18": tvm.ResNet18_Weights,
        "resnet34": tvm.ResNet34_Weights,
        "resnet50": tvm.ResNet50_Weights,
        "resnet101": tvm.ResNet101_Weights,
        "resnet152": tvm.ResNet152_Weights,
        "resnext50_32x4d": tvm.ResNeXt50_32X4D_Weights,
        "resnext101_32x8d": tvm.ResNeXt101_32X8D_Weights,
        "resnext101_64x4d": tvm.ResNeXt101_64X4D_Weights,
        "wide_resnet50_2": tvm.Wide_ResNet50_2_Weights,
        "wide_resnet101_2": tvm.Wide_ResNet101_2_Weights,
    }
    ours = {t.key: t for t in list_tags() if t.url}
    theirs = {f"{m}@{w.name}": w for m, e in enums.items() for w in e}
    assert set(ours) == set(theirs)
    for key, w in theirs.items():
        tag = ours[key]
        assert tag.url == w.url
        tf = w.transforms()
        assert tag.cfg["crop_pct"] == pytest.approx(tf.crop_size[0] / tf.resize_size[0])
        assert tag.key.split("@")[0] in reslab.list_models()
    assert find_tag("resnet50@default").tag == "IMAGENET1K_V2"
    assert find_tag("IMAGENET1K_V1", "resnet18").url == tvm.ResNet18_Weights.IMAGENET1K_V1.url


def test_tag_downloads_verifies_and_sets_imagenet_config(server, cache, monkeypatch):
    import dataclasses

    from reslab.weights import catalog as tags

    # The real tag with its URL pointed at the loopback server (same file-name convention).
    root, base = server
    path, digest, state = _tv_weights(root)
    path.rename(root / f"resnet18-{digest[:8]}.pth")
    table = dict(tags.tag_table())
    real = table[("resnet18", "imagenet1k_v1")]
    table[("resnet18", "imagenet1k_v1")] = dataclasses.replace(
        real, url=f"{base}/resnet18-{digest[:8]}.pth", sha256=None
    )
    monkeypatch.setattr(tags, "tag_table", lambda: table)
    model = reslab.create_model("resnet18", pretrained="IMAGENET1K_V1")
    torch.testing.assert_close(model.fc.bias, state["fc.bias"])
    assert model.default_cfg["class_names"][285] == "Egyptian cat"
    assert model.default_cfg["crop_pct"] == 0.875
    assert model.default_cfg["pretrained"] == "resnet18@IMAGENET1K_V1"
    # A file with the wrong hash prefix behind the same tag is refused.
    (root / "resnet18-00000000.pth").write_bytes(b"x")
    table[("resnet18", "imagenet1k_v1")] = dataclasses.replace(
        real, url=f"{base}/resnet18-00000000.pth"
    )
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        reslab.create_model("resnet18", pretrained="resnet18@IMAGENET1K_V1")
    # Where the full digest is known it is checked, not just the file name's prefix: the real
    # tag carries it, and a file that only shares the prefix is refused.
    assert real.sha256 is not None and real.sha256.startswith("f37072fd")
    table[("resnet18", "imagenet1k_v1")] = dataclasses.replace(
        real, url=f"{base}/resnet18-{digest[:8]}.pth", sha256=digest[:8] + "0" * 56
    )
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        reslab.create_model("resnet18", pretrained="resnet18@IMAGENET1K_V1")


def test_bare_tags_and_unknown_tags():
    with pytest.raises(WeightsError, match="several models"):
        find_tag("IMAGENET1K_V1")
    with pytest.raises(WeightsError, match="known tags: IMAGENET1K_V1, IMAGENET1K_V2"):
        find_tag("resnet50@IMAGENET1K_V9")
    with pytest.raises(WeightsError, match="its tags"):
        reslab.create_model("resnet50", pretrained="IMAGENET1K_V9")
    assert find_tag("nonsense") is None
    # Another model's tag: resnet50_v1 has v1.5's shapes, so only the name can refuse it.
    with pytest.raises(WeightsError, match="are resnet50's, not resnet50_v1's"):
        reslab.create_model("resnet50_v1", pretrained="resnet50@IMAGENET1K_V2")


def test_imagenet_names_are_torchvisions():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names == tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def test_keras_tag_without_fetch_says_what_to_run(cache):
    with pytest.raises(WeightsError, match="reslab weights fetch keras-resnet50"):
        reslab.create_model("resnet50_v1", pretrained="keras-imagenet")


def test_checkpoint_weights_bring_their_config(tmp_path):
    src = reslab.create_model(
        "resnet18", num_classes=4, in_chans=1, small_input=True,
        normalize={"mean": [0.3], "std": [0.2]},
    )  # fmt: skip
    src.set_data_config(class_names=("a", "b", "c", "d"))
    path = reslab.save_checkpoint(tmp_path / "m.safetensors", src)
    model = reslab.create_model("resnet18", pretrained=str(path)).eval()
    assert model.in_chans == 1 and model.num_classes == 4
    assert model.default_cfg["class_names"] == ["a", "b", "c", "d"]
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model(x), src.eval()(x))
    # Another head: the backbone is kept, the classifier is new.
    five = reslab.create_model("resnet18", pretrained=str(path), num_classes=5)
    assert five.fc.out_features == 5 and five.default_cfg["class_names"] is None
    torch.testing.assert_close(five.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    # Weights of one architecture never load silently into another with equal shapes.
    with pytest.raises(WeightsError, match="weights of resnet18"):
        reslab.create_model("plain18", pretrained=str(path))


def test_timm_state_dict_loads_as_is(tmp_path):
    import timm  # in the `test` extra: missing is a broken install, not a skip
    from safetensors.torch import save_file

    ref = timm.create_model("resnet26d", pretrained=False).eval()
    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = reslab.create_model("resnet26d", normalize=False, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_wrapped_and_prefixed_state_dicts_load(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = reslab.create_model("resnet18", pretrained=str(path))
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])
