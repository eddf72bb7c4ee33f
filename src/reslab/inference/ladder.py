"""The inference ladder: every engine on the same inputs, interleaved, speed against accuracy.

Each rung is timed run by run in turn with the others (so drift of a shared machine hits them
alike) and reported as the median; its logits are compared with fp32 eager's on the same
batch; with evaluation data, its top-1 is measured on real images. Achieved GFLOP/s are set
against the machine's peak for the rung's precision (:func:`cpu_peak`), so a reader sees how
close to the limit each rung is.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from reslab.inference.engines import ENGINE_NAMES, EngineUnavailable, get_engine

__all__ = [
    "Ladder",
    "Peak",
    "Rung",
    "compile_count",
    "cpu_peak",
    "flops_per_image",
    "format_ladder",
    "run_ladder",
]


@dataclass
class Peak:
    """Peak arithmetic of the CPUs this process may use, from /proc/cpuinfo and assumptions."""

    cpus: int
    ghz: float
    fp32_lanes: int
    fma_units: int
    flags: tuple[str, ...]
    note: str

    @property
    def fp32_gflops(self) -> float:
        return self.cpus * self.ghz * self.fp32_lanes * self.fma_units * 2

    def gflops(self, precision: str) -> float | None:
        """Peak GFLOP/s (ops/s for int8) of ``precision``: fp32, bf16 (dot-product
        instructions: 2x fp32) or int8 (VNNI: 4x fp32); ``None`` without the instructions."""
        if precision == "fp32":
            return self.fp32_gflops
        if precision == "bf16" and "avx512_bf16" in self.flags:
            return 2 * self.fp32_gflops
        if precision == "int8" and ("avx512_vnni" in self.flags or "avx_vnni" in self.flags):
            # 4 int8 products per 32-bit lane, at VNNI's vector width (512 or 256 bits)
            vnni_lanes = 16 if "avx512_vnni" in self.flags else 8
            return 4 * self.fp32_gflops * vnni_lanes / self.fp32_lanes
        return None


def cpu_peak(cpuinfo: str | None = None, threads: int | None = None) -> Peak | None:
    """This machine's fp32 peak: CPUs × clock × SIMD lanes × FMA units × 2, or ``None``.

    ``threads`` caps the CPUs counted (a run on 1 of 2 cores has half the machine's peak).

    The clock is /proc/cpuinfo's ``cpu MHz`` (in a VM the TSC rate, often the base clock:
    turbo can be higher, so the peak may be an underestimate). The number of FMA units is not
    visible and is assumed: 2 per core on x86 cores with AVX2/AVX-512, except AMD Zen 4
    (family 25), whose AVX-512 runs on 256-bit units (counted as 1 unit of 16 lanes).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    try:
        ghz = float(fields["cpu MHz"]) / 1000
    except (KeyError, ValueError):
        return None
    flags = tuple(fields.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= set(flags) else 4
    units = 2 if lanes >= 8 else 1
    zen4 = fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    if lanes == 16 and zen4:
        units = 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = min(cpus or 1, threads or cpus or 1)
    note = (
        f"{cpus} CPUs x {ghz:.2f} GHz (cpu MHz; turbo may be higher) x {lanes} fp32 lanes x "
        f"{units} FMA units (assumed) x 2"
    )
    return Peak(cpus or 1, ghz, lanes, units, flags, note)


def flops_per_image(model: nn.Module, example: Tensor) -> float:
    """FLOPs (a multiply-add = 2) of one forward pass per image, by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(example)
    return counter.get_total_flops() / len(example)


@dataclass
class Rung:
    """One row of the ladder: an engine's speed and accuracy (``None`` where not measured)."""

    engine: str
    precision: str
    images_per_s: float | None = None
    ratio: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_abs_dlogit: float | None = None
    rel_dlogit: float | None = None
    top1: float | None = None
    top1_change: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None
    prepare_s: float | None = None
    skipped: str | None = None


@dataclass
class Ladder:
    """Every rung, the reference they are set against, and the machine's peak."""

    rungs: list[Rung]
    reference: str
    batch: int
    flops_per_image: float
    peak: Peak | None
    threads: int = field(default_factory=torch.get_num_threads)
    compiles_while_timed: int = 0  # torch.compile compilations inside the timed runs (0)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.peak is not None:
            out["peak"]["fp32_gflops"] = self.peak.fp32_gflops
            out["peak"]["bf16_gflops"] = self.peak.gflops("bf16")
            out["peak"]["int8_gops"] = self.peak.gflops("int8")
            out["peak"].pop("flags")
        return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _interleaved(runners: dict[str, Callable], x: Tensor, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            start = time.perf_counter()
            runners[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def _top1(run: Callable[[Tensor], Tensor], data: Iterable[tuple[Tensor, Tensor]]) -> float:
    correct = total = 0
    for images, labels in data:
        labels = labels.cpu()
        scored = labels >= 0  # a negative label marks padding (a full batch for compiled code)
        correct += int((run(images).argmax(1).cpu() == labels)[scored].sum())
        total += int(scored.sum())
    return correct / max(total, 1)


def _eager_runner(module: nn.Module) -> Callable[[Tensor], Tensor]:
    module = module.eval()

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return module(x)

    return run


def _prepare(
    model: nn.Module,
    images: Tensor,
    engines: Sequence[str],
    calib: Tensor | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Rung], dict[str, Callable]]:
    """A rung for every engine, and a warmed-up runner for each one that can run here.

    Every engine is prepared before any is warmed up: preparing one may throw away what
    torch.compile made for another (torch 2.14's strict ``torch.export``, which the PT2E int8
    engine needs, calls ``torch._dynamo.reset()``), and a compiled rung would then compile
    again inside its timed runs.
    """
    rungs: dict[str, Rung] = {}
    runners: dict[str, Callable] = {}
    for name in engines:
        engine = get_engine(name)
        rung = rungs[name] = Rung(name, engine.precision)
        if engine.needs_calibration and calib is None:
            rung.skipped = "needs calibration images (--calib DATA)"
            continue
        start = time.perf_counter()
        try:
            runners[name] = engine.prepare(model, example=images[:2], calib=calib)
        except EngineUnavailable as err:
            rung.skipped = str(err).split(": ", 1)[-1]
            log(f"{name}: skipped ({rung.skipped})")
            continue
        rung.prepare_s = time.perf_counter() - start
    for name, run in runners.items():
        start = time.perf_counter()
        _warm_up(run, images)
        rungs[name].prepare_s = (rungs[name].prepare_s or 0.0) + time.perf_counter() - start
        log(f"{name}: prepared in {rungs[name].prepare_s:.0f} s")
    return rungs, runners


def _warm_up(run: Callable[[Tensor], Tensor], images: Tensor) -> None:
    """Run every input shape that is timed (the batch and one image) twice: compilation,
    and the first-call costs after it, happen here, not in the timed runs."""
    for x in (images, images, images[:1], images[:1]):
        run(x)


def compile_count() -> int:
    """How many frames torch.compile (Dynamo) has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def run_ladder(
    model: nn.Module,
    images: Tensor,
    *,
    engines: Sequence[str] = ENGINE_NAMES,
    reference: nn.Module | None = None,
    reference_name: str = "eager",
    calib: Tensor | None = None,
    eval_data: Callable[[], Iterable[tuple[Tensor, Tensor]]] | None = None,
    runs: int = 5,
    latency_runs: int = 20,
    log: Callable[[str], None] = lambda _: None,
) -> Ladder:
    """Measure every engine in ``engines`` on ``images`` (one batch, 0–1), interleaved.

    Args:
        model: the classifier (its eager fp32 logits are the accuracy reference).
        images: the timed batch; its first image is the batch-1 latency input.
        engines: engine names; ones this machine cannot run, or int8 without ``calib``,
            become rows with ``skipped`` set (never calibrated on noise).
        reference: the speed reference, run eagerly in fp32 and timed with the rungs as a
            row of its own (e.g. torchvision's twin: only its speed is compared, its weights
            may differ); default: the ``eager`` rung (or ``model`` run eagerly).
        reference_name: the reference row's name (when ``reference`` is given).
        calib: calibration images for the int8 engines.
        eval_data: a function returning fresh ``(images, labels)`` batches for top-1
            (labels below 0 mark padding images, which are not scored).
        runs: timed batches per engine (median reported).
        latency_runs: timed single images per engine (p50/p95).
        log: progress messages.
    """
    with torch.no_grad():
        expected = model.eval()(images).float().cpu()
    rungs, runners = _prepare(model, images, engines, calib, log)
    per_image = flops_per_image(model, images[:1])
    flops = dict.fromkeys(rungs, per_image)
    base_name = "eager"
    if reference is not None or "eager" not in runners:
        base_name = reference_name if reference is not None else "eager"
        ref_module = reference if reference is not None else model
        rungs = {base_name: Rung(base_name, "fp32")} | rungs
        runners = {base_name: _eager_runner(ref_module)} | runners
        flops[base_name] = flops_per_image(ref_module, images[:1])
        _warm_up(runners[base_name], images)
    log(f"timing {len(runners)} runners, interleaved")
    compiles = compile_count()
    batch_times = _interleaved(runners, images, runs)
    single_times = _interleaved(runners, images[:1], latency_runs)
    compiles = compile_count() - compiles
    if compiles:
        log(f"warning: {compiles} compilation(s) inside the timed runs; their times include it")
    peak = cpu_peak(threads=torch.get_num_threads()) if images.device.type == "cpu" else None
    base = len(images) / statistics.median(batch_times[base_name])
    for name, run in runners.items():
        rung = rungs[name]
        rung.images_per_s = len(images) / statistics.median(batch_times[name])
        rung.ratio = rung.images_per_s / base
        rung.p50_ms = 1e3 * statistics.median(single_times[name])
        rung.p95_ms = 1e3 * _percentile(single_times[name], 0.95)
        rung.gflops = rung.images_per_s * flops[name] / 1e9
        limit = peak.gflops(rung.precision) if peak else None
        rung.peak_fraction = rung.gflops / limit if limit else None
        if name == base_name and reference is not None:
            continue  # another network: its logits and accuracy are not comparable
        logits = run(images).float().cpu()
        rung.max_abs_dlogit = float((logits - expected).abs().max())
        rung.rel_dlogit = rung.max_abs_dlogit / float(expected.abs().max())
        if eval_data is not None:
            rung.top1 = _top1(run, eval_data())
            log(f"{name}: top-1 {rung.top1:.2%}")
    fp32_top1 = rungs["eager"].top1 if "eager" in rungs else None
    for rung in rungs.values():
        if rung.top1 is not None and fp32_top1 is not None:
            rung.top1_change = rung.top1 - fp32_top1
    ladder = Ladder(list(rungs.values()), base_name, len(images), per_image, peak)
    ladder.compiles_while_timed = compiles
    return ladder


def format_ladder(ladder: Ladder) -> str:
    """The ladder as a fixed-width table, one row per rung, then the peak it is set against."""
    head = (
        f"{'engine':<12} {'prec':<5} {'img/s':>7} {'ratio':>6} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'max|dlogit|':>11} {'top-1 %':>15} {'GFLOP/s':>8} {'of peak':>7} {'prep s':>6}"
    )
    lines = [head]
    for r in ladder.rungs:
        if r.skipped:
            lines.append(f"{r.engine:<12} {r.precision:<5} skipped: {r.skipped}")
            continue
        top1 = "" if r.top1 is None else f"{100 * r.top1:.2f}"
        if r.top1_change is not None and r.engine != "eager":
            top1 += f" ({100 * r.top1_change:+.2f})"
        dlogit = "" if r.max_abs_dlogit is None else f"{r.max_abs_dlogit:.2e}"
        frac = "" if r.peak_fraction is None else f"{100 * r.peak_fraction:.0f}%"
        prep = "" if r.prepare_s is None else f"{r.prepare_s:.0f}"
        lines.append(
            f"{r.engine:<12} {r.precision:<5} {r.images_per_s:7.2f} {r.ratio:5.2f}x "
            f"{r.p50_ms:7.1f} {r.p95_ms:7.1f} {dlogit:>11} {top1:>15} "
            f"{r.gflops:8.1f} {frac:>7} {prep:>6}"
        )
    lines.append(
        f"ratio: against {ladder.reference} fp32 at batch {ladder.batch}; "
        f"max|dlogit| and top-1 change: against eager fp32; "
        f"{ladder.flops_per_image / 1e9:.3g} GFLOP per image"
    )
    if ladder.compiles_while_timed:
        lines.append(
            f"warning: {ladder.compiles_while_timed} torch.compile compilation(s) happened "
            "inside the timed runs: the compiled rungs' times include them"
        )
    peak = ladder.peak
    if peak is None:
        lines.append("peak: cannot be known here (no clock in /proc/cpuinfo, or not a CPU)")
    else:
        bf16, int8 = peak.gflops("bf16"), peak.gflops("int8")
        extra = "".join(
            f", {name} {value:.0f}" for name, value in (("bf16", bf16), ("int8", int8)) if value
        )
        lines.append(f"peak: {peak.fp32_gflops:.0f} GFLOP/s fp32{extra} = {peak.note}")
    return "\n".join(lines)
