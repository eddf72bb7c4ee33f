"""The inference ladder: peak arithmetic by hand, and a two-rung ladder on a small model."""

from __future__ import annotations

import pytest
import torch

import reslab
from reslab.inference import ladder as ladder_module
from reslab.inference.engines import Engine, get_engine
from reslab.inference.ladder import cpu_peak, flops_per_image, format_ladder, run_ladder

ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16 avx512_vnni
"""
ZEN4 = ZEN5.replace("cpu family\t: 26", "cpu family\t: 25")
HASWELL = """vendor_id\t: GenuineIntel
cpu family\t: 6
cpu MHz\t\t: 3000.0
flags\t\t: sse2 avx fma avx2
"""


def test_peak_from_cpuinfo_by_hand(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1})
    zen5 = cpu_peak(ZEN5)
    # 2 CPUs x 2.6 GHz x 16 lanes x 2 FMA units x 2 FLOPs
    assert zen5.fp32_gflops == pytest.approx(2 * 2.6 * 16 * 2 * 2)
    assert zen5.gflops("bf16") == pytest.approx(2 * zen5.fp32_gflops)
    assert zen5.gflops("int8") == pytest.approx(4 * zen5.fp32_gflops)
    assert cpu_peak(ZEN4).fp32_gflops == pytest.approx(2 * 2.6 * 16 * 1 * 2)
    haswell = cpu_peak(HASWELL)
    assert haswell.fp32_gflops == pytest.approx(2 * 3.0 * 8 * 2 * 2)
    assert haswell.gflops("bf16") is None and haswell.gflops("int8") is None
    # Alder Lake style: AVX2 with the 256-bit VNNI: int8 is 4 x fp32 at the same width.
    alder = cpu_peak(HASWELL.replace("avx2", "avx2 avx_vnni"))
    assert alder.gflops("int8") == pytest.approx(4 * alder.fp32_gflops)
    assert cpu_peak("processor : 0\n") is None  # no clock: cannot be known
    assert cpu_peak(ZEN5, threads=1).fp32_gflops == pytest.approx(1 * 2.6 * 16 * 2 * 2)


def test_flop_count_of_a_conv_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8 outputs x 3 x 3 x 3 multiply-adds at each of 5 x 5 positions, 2 FLOPs each
    assert flops_per_image(conv, torch.rand(2, 3, 5, 5)) == 2 * 8 * 27 * 25


def test_two_rung_ladder_on_resnet20(one_thread):
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1).eval()
    images = torch.rand(4, 1, 28, 28)
    labels = model(images).argmax(1).detach()  # eager's own predictions: top-1 must be 1.0

    ladder = run_ladder(
        model,
        images,
        engines=("eager", "fast", "onnx-int8"),
        eval_data=lambda: [(images, labels)],
        runs=2,
        latency_runs=2,
    )
    eager, fast, int8 = ladder.rungs
    assert eager.max_abs_dlogit == 0.0 and eager.top1 == 1.0 and fast.top1 == 1.0
    assert fast.max_abs_dlogit < 1e-4 and fast.images_per_s > 0 and fast.p95_ms >= fast.p50_ms
    assert int8.skipped and "calibration" in int8.skipped and int8.images_per_s is None
    table = format_ladder(ladder)
    assert "fast" in table and "skipped: needs calibration" in table


def test_a_reference_module_is_its_own_row_timed_with_the_rungs(one_thread):
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1).eval()
    other = reslab.create_model("resnet20", num_classes=10, in_chans=1).eval()  # new weights
    images = torch.rand(4, 1, 28, 28)
    ladder = run_ladder(
        model,
        images,
        engines=("eager", "fast"),
        reference=other,
        reference_name="twin",
        runs=2,
        latency_runs=2,
    )
    twin, eager, fast = ladder.rungs
    assert ladder.reference == "twin" and twin.engine == "twin" and twin.ratio == 1.0
    # Another network: only its speed is compared, never its logits.
    assert twin.max_abs_dlogit is None and eager.max_abs_dlogit == 0.0
    assert eager.ratio == pytest.approx(eager.images_per_s / twin.images_per_s)
    assert fast.p50_ms > 0 and twin.p50_ms > 0
    assert "twin" in format_ladder(ladder)


# ------------------------------------------------------------------ no compiling while timed
def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def _resetting_engine(every_call: bool) -> Engine:
    """An engine whose preparation (or every call) does what torch 2.14's strict
    torch.export does: ``torch._dynamo.reset()``, which drops every compiled graph."""

    def build(model, example, calib, device):
        torch._dynamo.reset()

        def run(x):
            if every_call:
                torch._dynamo.reset()
            with torch.no_grad():
                return model(x)

        return run

    return Engine("resets", "fp32", "resets dynamo", False, False, lambda d: None, build)


def _count_timed_compiles(monkeypatch) -> list[int]:
    """Compilations during each timed loop, counted here from Dynamo's own counters."""
    from torch._dynamo.utils import counters

    per_loop: list[int] = []
    timed = ladder_module._interleaved

    def spy(runners, x, runs):
        before = counters["frames"]["total"]
        out = timed(runners, x, runs)
        per_loop.append(counters["frames"]["total"] - before)
        return out

    monkeypatch.setattr(ladder_module, "_interleaved", spy)
    return per_loop


def _with_engine(monkeypatch, engine: Engine) -> None:
    real = ladder_module.get_engine
    monkeypatch.setattr(
        ladder_module, "get_engine", lambda name: engine if name == engine.name else real(name)
    )


@pytest.mark.skipif(get_engine("compile").available()[0] is False, reason="no C++ compiler")
def test_a_compiled_rung_never_compiles_inside_its_timed_runs(monkeypatch, one_thread):
    # The compile rung is prepared first; a later rung's preparation resets Dynamo (as the
    # PT2E int8 engine's strict export does). Warm-ups must come after every preparation.
    _with_engine(monkeypatch, _resetting_engine(every_call=False))
    per_loop = _count_timed_compiles(monkeypatch)
    images = torch.rand(4, 3, 8, 8)
    ladder = run_ladder(_tiny(), images, engines=("eager", "compile", "resets"), runs=2,
                        latency_runs=3)  # fmt: skip
    assert per_loop == [0, 0], f"compilations inside the timed runs (batch 4, batch 1): {per_loop}"
    assert ladder.compiles_while_timed == 0 and "warning" not in format_ladder(ladder)
    compiled = ladder.rungs[1]
    assert compiled.engine == "compile" and compiled.max_abs_dlogit < 1e-5


@pytest.mark.skipif(get_engine("compile").available()[0] is False, reason="no C++ compiler")
def test_the_ladder_says_when_something_compiled_while_timed(monkeypatch, one_thread):
    _with_engine(monkeypatch, _resetting_engine(every_call=True))
    per_loop = _count_timed_compiles(monkeypatch)
    ladder = run_ladder(_tiny(), torch.rand(4, 3, 8, 8), engines=("compile", "resets"), runs=2,
                        latency_runs=2)  # fmt: skip
    assert sum(per_loop) > 0 and ladder.compiles_while_timed == sum(per_loop)
    assert f"warning: {sum(per_loop)} torch.compile compilation(s)" in format_ladder(ladder)
    assert ladder.to_dict()["compiles_while_timed"] == sum(per_loop)


@pytest.mark.slow
@pytest.mark.skipif(get_engine("int8").available()[0] is False, reason="no PT2E int8 here")
def test_the_int8_rung_leaves_the_compile_rung_compiled(monkeypatch, one_thread):
    # The real trigger: PT2E's strict torch.export resets Dynamo after `compile` was built.
    per_loop = _count_timed_compiles(monkeypatch)
    model = reslab.create_model("resnet20", num_classes=10, width=0.25).eval()
    images = torch.rand(4, 3, 16, 16)
    run_ladder(model, images, engines=("compile", "int8"), calib=torch.rand(8, 3, 16, 16),
               runs=2, latency_runs=2)  # fmt: skip
    assert per_loop == [0, 0]
