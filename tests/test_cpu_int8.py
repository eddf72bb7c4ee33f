"""The int8 arithmetic chosen per CPU class, with the CPU's flags mocked: x86 CPUs without
VNNI (AVX2, AVX-512 without VNNI, SSE4.1) get 7-bit weights, so that 16-bit pair sums cannot
saturate; VNNI/AMX and ARM keep 8 bits. Checked in what the choice does: the integer weights
written into the ONNX file (read back with onnx), the weight range of the PT2E graph, the
file's metadata and ``reslab export``'s output. With ``qemu-x86_64`` installed, a slow test
runs the files on an emulated AVX2 CPU and sees the 8-bit one saturate and the 7-bit one not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab.inference import cpu_int8, int8_choice
from reslab.inference.export import read_export_metadata

# /proc/cpuinfo flag lines (the int8-relevant part) of real CPUs, and what each must get:
# (class, one bit less). Without VNNI, x86 int8 kernels use vpmaddubsw (16-bit pair sums).
CPUS = {
    "AMD EPYC 7763 (Zen 3)": ("sse4_1 avx avx2 fma", "avx2", True),
    "Intel Haswell": ("sse4_1 avx avx2 fma", "avx2", True),
    "Intel Skylake-SP": ("sse4_1 avx2 avx512f avx512bw avx512cd", "avx512", True),
    "Intel Cascade Lake": ("avx2 avx512f avx512bw avx512_vnni", "avx512-vnni", False),
    "AMD Zen 4": ("avx2 avx512f avx512bw avx512_vnni avx512_bf16", "avx512-vnni", False),
    "Intel Alder Lake (AVX-VNNI)": ("sse4_1 avx2 avx_vnni", "avx-vnni", False),
    "Intel Sapphire Rapids (AMX)": ("avx2 avx512f avx512bw avx512_vnni amx_int8", "amx", False),
    "Intel Nehalem": ("sse4_1 sse4_2", "sse4", True),
}
ZEN3_TORCH_CAPS = {"avx2": True, "avx512_f": False, "avx512_bw": False, "avx512_vnni": False,
                   "avx_vnni": False, "amx_int8": False, "sse4_1": True}  # fmt: skip


@pytest.mark.parametrize("name", list(CPUS))
def test_each_cpu_class_gets_its_int8_arithmetic(name):
    flags, cpu_class, fewer_bits = CPUS[name]
    cpu = cpu_int8(flags.split(), machine="x86_64")
    assert cpu.cpu_class == cpu_class and cpu.saturates is fewer_bits
    choice = int8_choice("this", cpu)
    assert choice.weight_bits == (7 if fewer_bits else 8)
    assert ("7-bit" in choice.weights) is fewer_bits
    # Made for another target, the machine's own class does not matter.
    assert int8_choice("any", cpu).weight_bits == 7 and int8_choice("vnni", cpu).weight_bits == 8
    assert choice.to_dict()["cpu"]["class"] == cpu_class


def test_arm_keeps_8_bits_and_unknown_targets_are_refused():
    arm = cpu_int8(["asimd", "asimddp"], machine="aarch64")
    assert arm.cpu_class == "aarch64" and not arm.saturates
    assert int8_choice("this", arm).weight_bits == 8
    with pytest.raises(ValueError, match="expected one of"):
        int8_choice("avx2", arm)


def test_the_flags_are_read_from_cpuid_through_torch(monkeypatch):
    # torch.cpu.get_capabilities reads CPUID: what the kernels see, also under an emulator.
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: ZEN3_TORCH_CAPS)
    cpu = cpu_int8(machine="x86_64")
    assert cpu.cpu_class == "avx2" and cpu.flags == ("sse4_1", "avx2")
    assert cpu.source.startswith("cpuid")


def test_without_torch_capabilities_proc_cpuinfo_is_read(monkeypatch, tmp_path):
    def missing():
        raise AttributeError("old torch")

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu sse4_1 avx2 avx512f avx512bw avx512_vnni\n")
    real_open = open

    def fake_open(file, *args, **kwargs):
        return real_open(cpuinfo if file == "/proc/cpuinfo" else file, *args, **kwargs)

    monkeypatch.setattr(torch.cpu, "get_capabilities", missing)
    monkeypatch.setattr("builtins.open", fake_open)
    cpu = cpu_int8(machine="x86_64")
    assert cpu.cpu_class == "avx512-vnni" and cpu.source == "/proc/cpuinfo"


# ---------------------------------------------------------------------------- in the files
def _onnx_weights(path: Path) -> list[np.ndarray]:
    """The int8 weight initialisers of a QDQ file, read with onnx (not reslab)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return [a for a in arrays if a.dtype == np.int8 and a.ndim >= 2]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, width=0.25).eval()
    return model, [torch.rand(8, 3, 16, 16) for _ in range(2)]


@pytest.fixture(scope="module")
def fp32_onnx(small, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from reslab.inference import export_onnx

    model, calib = small
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "fp32.onnx", calib[0][:2])


@pytest.mark.parametrize("target, bound", [("vnni", 127), ("any", 64)])
def test_the_onnx_file_holds_weights_of_the_chosen_width(target, bound, small, fp32_onnx,
                                                         tmp_path):  # fmt: skip
    from reslab.inference import quantize_onnx

    out = quantize_onnx(fp32_onnx, tmp_path / "m.onnx", small[1], choice=int8_choice(target))
    weights = _onnx_weights(out)
    assert len(weights) == 20  # every conv of resnet20 (19) and the classifier
    peak = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
    assert peak == bound  # per-channel symmetric: each channel's largest weight hits the bound
    quant = read_export_metadata(out)["quantization"]
    assert quant["target"] == target and quant["weight_bits"] == (7 if bound == 64 else 8)
    assert quant["cpu"]["class"] == cpu_int8().cpu_class
    assert ("7-bit" in quant["weights"]) is (bound == 64)


@pytest.mark.parametrize("caps, bits", [(ZEN3_TORCH_CAPS, 7), (None, 8)])
def test_the_int8_engines_follow_the_cpu(caps, bits, small, monkeypatch):
    from reslab.inference import get_engine, pt2e_int8

    if caps is None:  # an AVX512-VNNI CPU
        caps = ZEN3_TORCH_CAPS | {"avx512_f": True, "avx512_bw": True, "avx512_vnni": True}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    model, calib = small
    seen = {}
    real = pt2e_int8.quantize

    def spy(*args, **kwargs):
        seen["module"] = real(*args, **kwargs)
        return seen["module"]

    monkeypatch.setattr(pt2e_int8, "quantize", spy)
    if get_engine("int8").available()[0]:
        get_engine("int8").prepare(model, example=calib[0][:2], calib=calib)  # compiles lazily
        nodes = seen["module"].graph.nodes
        weights = {tuple(n.args[4:6]) for n in nodes if "dequantize_per_channel" in str(n.target)}
        assert weights == {(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)}  # -64..63 or -128..127
        acts = {int(n.args[4]) for n in nodes if "quantize_per_tensor" in str(n.target)}
        assert acts == {255}  # activations keep 8 bits
    from reslab.inference import environment

    facts = environment()["int8"]
    seven = bits == 7
    assert facts["weight_bits"] == bits and facts["cpu"]["flags_from"].startswith("cpuid")
    assert ("7-bit" in facts["onnx-int8"]) is seven and ("7-bit" in facts["int8"]) is seven


# ---------------------------------------------------------------------------- emulated AVX2
EMULATED_RUN = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[1])
for name in sys.argv[2:]:
    for exact in ("0", "1"):
        options = ort.SessionOptions()
        options.add_session_config_entry("session.x64quantprecision", exact)
        session = ort.InferenceSession(name, options, providers=["CPUExecutionProvider"])
        np.save(f"{name}.{exact}.npy", session.run(None, {"images": x})[0])
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user (apt-get)")
def test_on_an_emulated_avx2_cpu_8_bits_saturate_and_7_do_not(tmp_path):
    """qemu-x86_64 -cpu Haswell-v4 (AVX2, no VNNI) makes onnxruntime take the kernels whose
    pair sums saturate. Reference: the same files on this machine's CPU."""
    import onnxruntime as ort

    from reslab.data import load_dataset
    from reslab.inference import export_onnx, quantize_onnx

    if cpu_int8().saturates:
        pytest.skip("this machine's own int8 arithmetic saturates: no exact reference")
    try:
        test = load_dataset("fashion-mnist", "test", download=False, progress=False)
    except (FileNotFoundError, ValueError, OSError) as err:
        pytest.skip(f"Fashion-MNIST not on disk: {err}")
    model = reslab.create_model("resnet20", pretrained="reslab-fashion-mnist").eval()
    images = test.images[:256].float().div(255)
    calib = list(test.images[256:320].float().div(255).split(16))
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", images[:2])
    files = {}
    for target in ("vnni", "any"):
        files[target] = quantize_onnx(fp32, tmp_path / f"{target}.onnx", calib,
                                      choice=int8_choice(target))  # fmt: skip
    np.save(tmp_path / "x.npy", images.numpy())
    command = ["qemu-x86_64", "-cpu", "Haswell-v4", sys.executable, "-c", EMULATED_RUN,
               str(tmp_path / "x.npy"), *map(str, files.values())]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)

    def native(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images.numpy()})[0]

    with torch.no_grad():
        scale = float(model(images).abs().max())
    for target, path in files.items():
        here = native(path)
        emulated, exact = (np.load(f"{path}.{e}.npy") for e in ("0", "1"))
        np.testing.assert_allclose(exact, here, atol=1e-5)  # exact u8xu8: as a VNNI CPU
        gap = float(np.abs(emulated - here).max())
        if target == "any":  # 7-bit weights: nothing saturates, the same integers
            assert gap < 1e-5, gap
        else:  # 8-bit weights: saturated pair sums change the logits by far more than 1e-5
            assert gap > 0.05 * scale, gap
