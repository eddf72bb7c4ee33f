"""Inference engines through the command line, on real Fashion-MNIST images and shipped weights.

The reference is computed here, independently of the commands: the shipped resnet20's eager
logits on the same real test images, their true labels, and onnxruntime run directly on the
file ``reslab export --quantize int8`` writes. Only cheap engines run through the CLI (the
compiled ones are checked against eager in test_engines.py); what is tested here is the
plumbing: engine choice, calibration data, refusals, the ladder's JSON.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.cli import main
from reslab.inference import cpu_int8, fixed_batch, torchvision_twin
from reslab.inference.export import export_metadata, read_export_metadata
from test_data_synthetic import write_idx

SPEC = "resnet20@reslab-fashion-mnist"
N_TEST, N_TRAIN = 64, 96


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    """A small Fashion-MNIST of real images in its own idx files (64 test, 96 train images),
    32 of the test images as PNG files, and the eager model's logits on the test images."""
    from reslab.data import load_dataset

    try:
        test = load_dataset("fashion-mnist", "test", download=False, progress=False)
        train = load_dataset("fashion-mnist", "train", download=False, progress=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        pytest.skip(f"Fashion-MNIST not on disk: {err}")
    root = tmp_path_factory.mktemp("fm")
    g = torch.Generator().manual_seed(0)
    pick_test = torch.randperm(len(test), generator=g)[:N_TEST]
    pick_train = torch.randperm(len(train), generator=g)[:N_TRAIN]
    folder = root / "fashion-mnist"
    folder.mkdir()
    for prefix, ds, pick in (("t10k", test, pick_test), ("train", train, pick_train)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ds.images[pick][:, 0].numpy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", ds.labels[pick].numpy().astype("u1"))
    pngs = []
    for i, img in enumerate(test.images[pick_test[:32]]):
        pngs.append(str(root / f"img{i}.png"))
        Image.fromarray(img[0].numpy()).save(pngs[-1])
    model = reslab.create_model("resnet20", pretrained="reslab-fashion-mnist").eval()
    images = test.images[pick_test].float().div(255)
    with torch.no_grad():
        logits = model(images)
    return {
        "root": root,
        "pngs": pngs,
        "labels": test.labels[pick_test],
        "logits": logits,
        "calib": ["--calib", "fashion-mnist", "--calib-images", "48"],
    }


def _json_out(capsys) -> object:
    return json.loads(capsys.readouterr().out)  # progress goes to stderr


# ---------------------------------------------------------------------------- predict / eval
@pytest.mark.parametrize("engine", ["eager", "fast", "onnx", "onnx-int8"])
def test_predict_engine_agrees_with_eager(engine, fm, capsys):
    calib = fm["calib"] + ["--data-dir", str(fm["root"])] if engine == "onnx-int8" else []
    argv = ["predict", SPEC, *fm["pngs"], "--json", "--topk", "1", "--engine", engine, *calib]
    assert main(argv) == 0
    results = _json_out(capsys)
    top1 = torch.tensor([r["predictions"][0]["index"] for r in results])
    probs = torch.tensor([r["predictions"][0]["probability"] for r in results])
    expected = fm["logits"][:32].softmax(1).max(1)
    agree = float((top1 == expected.indices).float().mean())
    if engine == "onnx-int8":
        assert agree >= 30 / 32, f"int8 top-1 agrees with eager on {agree:.1%}"
    else:
        assert agree == 1.0
        assert torch.allclose(probs, expected.values, atol=1e-4)


@pytest.mark.parametrize("engine", ["fast", "onnx-int8"])
def test_eval_engine_accuracy_matches_eager(engine, fm, capsys, tmp_path):
    calib = fm["calib"] if engine == "onnx-int8" else []
    argv = ["eval", SPEC, "--data", "fashion-mnist", "--data-dir", str(fm["root"])]
    argv += ["--workers", "0", "--bs", "24", "--json", "--out", str(tmp_path / "cm.png")]
    assert main([*argv, "--engine", engine, *calib]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    eager = float((fm["logits"].argmax(1) == fm["labels"]).float().mean())
    assert result["count"] == N_TEST and result["engine"] == engine
    tolerance = 2 / N_TEST if engine == "onnx-int8" else 1e-9  # two images for int8
    assert abs(result["accuracy"] - eager) <= tolerance


# ---------------------------------------------------------------------------- bench
LADDER_FIELDS = {"spec", "size", "data", "limit", "calib", "calib_images", "environment"}
LADDER_FIELDS |= {"load_average_before_after", "rungs", "reference", "batch"}
LADDER_FIELDS |= {"flops_per_image", "peak", "threads", "compiles_while_timed"}
INT8_FIELDS = {"target", "cpu", "weight_bits", "reason", "onnx-int8", "int8"}
RUNG_FIELDS = {"engine", "precision", "images_per_s", "ratio", "p50_ms", "p95_ms"}
RUNG_FIELDS |= {"max_abs_dlogit", "rel_dlogit", "top1", "top1_change", "gflops"}
RUNG_FIELDS |= {"peak_fraction", "prepare_s", "skipped"}


def test_bench_ladder_json_has_the_documented_fields(fm, capsys):
    argv = ["bench", SPEC, "--ladder", "--engines", "eager,fast,onnx-int8", "--json"]
    argv += ["--data", "fashion-mnist", "--data-dir", str(fm["root"]), "--batch", "16"]
    argv += ["--runs", "1", "--latency-runs", "2", "--threads", "1", *fm["calib"]]
    assert main(argv) == 0
    result = _json_out(capsys)
    assert set(result) == LADDER_FIELDS
    rungs = {r["engine"]: r for r in result["rungs"]}
    assert list(rungs) == ["eager", "fast", "onnx-int8"]
    assert all(set(r) == RUNG_FIELDS for r in rungs.values())
    # resnet20 has no torchvision twin: reslab eager is the reference.
    assert result["reference"] == "eager" and rungs["eager"]["ratio"] == 1.0
    eager_top1 = float((fm["logits"].argmax(1) == fm["labels"]).float().mean())
    assert rungs["eager"]["top1"] == pytest.approx(eager_top1)
    assert rungs["fast"]["top1"] == pytest.approx(eager_top1)
    assert rungs["fast"]["rel_dlogit"] < 1e-4
    int8 = rungs["onnx-int8"]
    assert abs(int8["top1_change"]) <= 2 / N_TEST and 0 < int8["rel_dlogit"] < 0.25
    assert result["calib_images"] == 48 and result["size"] == [1, 28, 28]
    assert result["compiles_while_timed"] == 0
    int8_facts = result["environment"]["int8"]
    assert set(int8_facts) == INT8_FIELDS and int8_facts["cpu"]["class"] == cpu_int8().cpu_class
    peak = result["peak"]
    if peak is not None:  # the peak is the product of the stated factors
        product = peak["cpus"] * peak["ghz"] * peak["fp32_lanes"] * peak["fma_units"] * 2
        assert peak["fp32_gflops"] == pytest.approx(product)
        fast = rungs["fast"]
        assert fast["peak_fraction"] == pytest.approx(fast["gflops"] / product)


def test_bench_one_engine_prints_its_row_and_the_reference(capsys):
    argv = ["bench", SPEC, "--engine", "fast", "--runs", "1", "--latency-runs", "1"]
    assert main([*argv, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:4]}
    assert set(rows) == {"eager", "fast"} and rows["eager"][3] == "1.00x"
    assert "peak:" in out


# ---------------------------------------------------------------------------- export
def test_export_int8_runs_on_onnxruntime_and_agrees_with_fp32(fm, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "r20-int8.onnx"
    argv = ["export", SPEC, "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    argv += [*fm["calib"], "--data-dir", str(fm["root"]), "--check-images", "32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top-1 agreement with the PyTorch fp32 model" in printed
    # The file itself, run here by onnxruntime on real test images.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    images = np.stack([np.asarray(Image.open(p), dtype=np.float32)[None] / 255 for p in fm["pngs"]])
    logits = torch.from_numpy(session.run(None, {"images": images})[0])
    agree = float((logits.argmax(1) == fm["logits"][:32].argmax(1)).float().mean())
    assert agree >= 30 / 32
    meta = read_export_metadata(out)
    quant = meta.pop("quantization")
    model = reslab.create_model("resnet20", pretrained="reslab-fashion-mnist")
    assert meta == export_metadata(model)  # what an fp32 export stores
    assert quant["calibration_images"] == 48 and quant["calibration"] == "minmax"


ZEN3 = {"sse4_1": True, "avx2": True, "avx512_f": False, "avx512_vnni": False, "avx_vnni": False}


@pytest.mark.parametrize("target", [None, "vnni", "any"])
def test_export_int8_on_an_avx2_cpu_records_and_uses_its_choice(target, fm, tmp_path, capsys,
                                                                monkeypatch):  # fmt: skip
    # An AMD Zen 3 (AVX2, no VNNI), as CPUID reports it through torch.
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: ZEN3)
    out = tmp_path / "r20-int8.onnx"
    argv = ["export", SPEC, "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    argv += [*fm["calib"], "--data-dir", str(fm["root"]), "--check-images", "32"]
    assert main(argv + (["--target-cpu", target] if target else [])) == 0
    printed = capsys.readouterr().out
    seven = target != "vnni"  # this AVX2 CPU, or any x86 CPU: 7-bit weights
    assert f"--target-cpu {target or 'this'}: weights int8 per channel" in printed
    assert ("7-bit (|w| <= 64)" in printed) is seven
    assert "this CPU: avx2 (sse4_1 avx2, from cpuid" in printed
    assert ("computed as a VNNI CPU does" in printed) is not seven
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer]
    peak = max(int(np.abs(w.astype(np.int16)).max()) for w in weights if w.dtype == np.int8)
    assert peak == (64 if seven else 127)
    quant = read_export_metadata(out)["quantization"]
    assert quant["cpu"] == {"class": "avx2", "flags": ["sse4_1", "avx2"],
                            "flags_from": "cpuid (torch.cpu.get_capabilities)"}  # fmt: skip
    assert quant["weight_bits"] == (7 if seven else 8) and quant["target"] == (target or "this")
    assert ("session.x64quantprecision" in quant["note"]) is not seven


def test_target_cpu_goes_with_quantize(capsys, tmp_path):
    argv = ["export", SPEC, "--format", "onnx", "--target-cpu", "any"]
    assert main([*argv, "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--target-cpu chooses the int8 arithmetic" in _one_line_error(capsys)


def test_export_int8_at_a_fixed_batch_calibrates_with_that_batch(fm, tmp_path, capsys):
    # 48 calibration images at --batch 32: one full batch calibrates a graph that takes only
    # 32 images (the 16 left over would not fit it); more than there are images is one line.
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "r20-int8-b32.onnx"
    argv = ["export", SPEC, "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    argv += [*fm["calib"], "--data-dir", str(fm["root"]), "--check-images", "32"]
    assert main([*argv, "--batch", "32"]) == 0, capsys.readouterr().err
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == 32
    assert main([*argv, "--batch", "64"]) == 2
    assert "needs at least 64 calibration images" in _one_line_error(capsys)


# ---------------------------------------------------------------------------- refusals
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "".join(err), err
    return errors[0]


def _command(verb: str, fm) -> list[str]:
    return {
        "predict": ["predict", SPEC, fm["pngs"][0]],
        "eval": ["eval", SPEC, "--data", "fashion-mnist", "--data-dir", str(fm["root"])],
        "bench": ["bench", SPEC, "--runs", "1"],
    }[verb]


@pytest.mark.parametrize("verb", ["predict", "eval", "bench"])
def test_an_engine_this_machine_lacks_is_one_line_exit_2(verb, fm, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert main([*_command(verb, fm), "--engine", "bf16"]) == 2
    line = _one_line_error(capsys)
    assert "engine 'bf16' is not available here" in line and "bfloat16" in line


def test_export_int8_without_onnxruntime_is_one_line_exit_2(fm, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "m.onnx"
    argv = ["export", SPEC, "--format", "onnx", "--quantize", "int8", "--out", str(out)]
    assert main([*argv, *fm["calib"]]) == 2
    assert "onnxruntime" in _one_line_error(capsys) and not out.exists()


@pytest.mark.parametrize("verb", ["predict", "eval", "bench", "export"])
def test_int8_without_calibration_images_is_a_usage_error(verb, fm, capsys, tmp_path):
    if verb == "export":
        argv = ["export", SPEC, "--format", "onnx", "--quantize", "int8"]
        argv += ["--out", str(tmp_path / "m.onnx")]
    else:
        argv = [*_command(verb, fm), "--engine", "onnx-int8"]
    assert main(argv) == 2
    assert "--calib DATA" in _one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_quantize_needs_onnx_and_calib_needs_an_int8_engine(fm, capsys, tmp_path):
    argv = ["export", SPEC, "--format", "torchscript", "--quantize", "int8", *fm["calib"]]
    assert main([*argv, "--out", str(tmp_path / "m.ts")]) == 2
    assert "--format onnx" in _one_line_error(capsys)
    assert main([*_command("predict", fm), "--engine", "fast", *fm["calib"]]) == 2
    assert "only used by the int8 engines" in _one_line_error(capsys)


def test_calib_without_quantize_says_it_is_for_quantize(fm, capsys, tmp_path):
    out = tmp_path / "m.onnx"
    argv = ["export", SPEC, "--format", "onnx", "--out", str(out), *fm["calib"]]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "--calib is only used by --quantize int8" in line, line
    assert "not by a --format onnx export without --quantize" in line, line
    assert not out.exists()


# ---------------------------------------------------------------------------- helpers
def test_fixed_batch_pads_short_batches_and_splits_long_ones():
    seen = []

    def run(x):  # a per-image function, so padding cannot change a real image's output
        seen.append(len(x))
        return x.flatten(1).sum(1, keepdim=True) * 2

    padded = fixed_batch(run, 8)
    for n in (1, 5, 8, 20):
        x = torch.rand(n, 1, 3, 3)
        torch.testing.assert_close(padded(x), x.flatten(1).sum(1, keepdim=True) * 2)
    assert set(seen) == {8}  # 1, 5, 8, then 8 + 8 + 4
    assert len(seen) == 6


def test_torchvision_twin_is_the_same_architecture_where_torchvision_has_it():
    import torchvision

    name, twin = torchvision_twin(reslab.create_model("resnet18"))
    reference = torchvision.models.resnet18()
    assert name == "torchvision resnet18" and type(twin) is type(reference)
    shapes = [p.shape for p in twin.parameters()]
    assert shapes == [p.shape for p in reference.parameters()]
    name, twin = torchvision_twin(reslab.create_model("resnet50_v1", num_classes=10))
    assert name == "torchvision resnet50" and twin.fc.out_features == 10
    assert torchvision_twin(reslab.create_model("resnet20")) is None
    assert torchvision_twin(reslab.create_model("resnet18", in_chans=1)) is None
