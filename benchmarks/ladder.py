"""The inference ladders of BENCHMARKS.md: ``reslab bench --ladder`` per model, under the heavy
lock, raw outputs kept in ``benchmarks/results/``, and the Markdown tables made from them.

    python benchmarks/ladder.py run [NAME ...] [--tag MACHINE]   # resnet50, resnet18, ...
    python benchmarks/ladder.py table benchmarks/results/ladder-resnet50.json
    python benchmarks/ladder.py gemm                 # what one big matmul reaches, per dtype
    python benchmarks/ladder.py profile SPEC ENGINE [--calib DATA]   # where a rung's time goes

``run`` executes each measurement as ``flock /tmp/reslab-heavy.lock sh -c 'uptime; reslab
bench ... --json; uptime'``: the JSON goes to ``results/ladder-NAME.json``, progress and the two
``uptime`` lines (load while holding the lock) to ``results/ladder-NAME.log``. Imagenette is
extracted from ``../shared/data`` once (``imagenette_data.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOCK = "/tmp/reslab-heavy.lock"
TIMING = ["--batch", "16", "--runs", "9", "--latency-runs", "30", "--json"]


def _configs() -> dict[str, list[str]]:
    from imagenette_data import imagenette_root

    nette = str(imagenette_root())
    return {
        # 1000-way top-1 on all 3,925 Imagenette val images; int8 calibrated on train images.
        "resnet50": ["resnet50_v1@keras-imagenet", "--data", nette, "--calib", nette],
        # Random weights (speed only); int8 still calibrated on real images.
        "resnet18": ["resnet18", "--size", "224", "--calib", nette],
        "resnet20-fmnist": ["resnet20@reslab-fashion-mnist", "--data", "fashion-mnist"]
        + ["--calib", "fashion-mnist"],
        "resnet20-cifar10": ["resnet20@reslab-cifar10", "--data", "cifar10"]
        + ["--calib", "cifar10"],
    }


def run(names: list[str], tag: str = "") -> None:
    configs = _configs()
    for name in names or list(configs):
        bench = [sys.executable, "-m", "reslab", "bench", *configs[name], "--ladder"]
        bench += [*TIMING, "--calib-images", "128"]
        script = f"uptime; {shlex.join(bench)}; status=$?; uptime; exit $status"
        stem = f"ladder-{name}{'-' + tag if tag else ''}"
        out, log = RESULTS / f"{stem}.json", RESULTS / f"{stem}.log"
        print(f"{name}: {shlex.join(bench)}", flush=True)
        with open(out, "w") as stdout, open(log, "w") as stderr:
            stderr.write(f"$ flock {LOCK} sh -c {shlex.quote(script)}\n")
            stderr.flush()
            result = subprocess.run(
                ["flock", LOCK, "sh", "-c", script], stdout=stdout, stderr=stderr, env=os.environ
            )
        # uptime prints to stdout: move its two lines from the JSON file to the log.
        lines = out.read_text().splitlines()
        uptimes = [line for line in lines if "load average" in line]
        out.write_text("\n".join(line for line in lines if line not in uptimes) + "\n")
        with open(log, "a") as fh:
            fh.write("uptime before / after:\n" + "\n".join(uptimes) + "\n")
        print(f"  exit {result.returncode}; {' | '.join(u.strip() for u in uptimes)}")


def _cell(value, fmt: str, empty: str = "") -> str:
    return empty if value is None else format(value, fmt)


def table(path: Path) -> str:
    """One Markdown table from a ladder's JSON."""
    result = json.loads(path.read_text())
    rows = [
        "| engine | prec | img/s | ratio | b1 p50 / p95 ms | max abs dlogit (rel) | top-1 % "
        "(change) | GFLOP/s | of peak | prepare s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rungs"]:
        if r["skipped"]:
            rows.append(f"| {r['engine']} | {r['precision']} | skipped: {r['skipped']} |")
            continue
        dlogit = ""
        if r["max_abs_dlogit"] is not None:
            dlogit = f"{r['max_abs_dlogit']:.2g} ({r['rel_dlogit']:.1e})"
        top1 = _cell(r["top1"] and 100 * r["top1"], ".2f")
        if r["top1_change"] is not None and r["engine"] != "eager":
            top1 += f" ({100 * r['top1_change']:+.2f})"
        rows.append(
            f"| {r['engine']} | {r['precision']} | {r['images_per_s']:.1f} | "
            f"{r['ratio']:.2f}x | {r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {dlogit} | {top1} | "
            f"{r['gflops']:.0f} | {_cell(r['peak_fraction'] and 100 * r['peak_fraction'], '.0f')}"
            f"% | {_cell(r['prepare_s'], '.0f')} |"
        )
    load = result["load_average_before_after"]
    rows.append("")
    rows.append(
        f"{result['spec']}, batch {result['batch']}, input {'x'.join(map(str, result['size']))}, "
        f"{result['threads']} threads; reference: {result['reference']} fp32; "
        f"{result['flops_per_image'] / 1e9:.3g} GFLOP/image; 1-min load "
        f"{load[0][0]:.2f} -> {load[1][0]:.2f}"
    )
    return "\n".join(rows)


def gemm(size: int = 2048, runs: int = 7) -> None:
    """GFLOP/s of one ``size``-square matmul (median of ``runs``) on 1 and 2 threads, fp32,
    bf16 and (``torch._int_mm``, u8/s8 -> s32 where supported) int8: a practical ceiling to
    set the ladder's GFLOP/s against, next to the computed peak."""
    import statistics
    import time

    import torch

    g = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    cases = {"fp32": (a32, b32), "bf16": (a32.bfloat16(), b32.bfloat16())}
    cases["int8"] = (a32.clamp(-127, 127).to(torch.int8), b32.clamp(-127, 127).to(torch.int8))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, (a, b) in cases.items():
            op = torch._int_mm if name == "int8" else torch.mm
            try:
                op(a, b)
            except RuntimeError as err:
                print(f"{threads} thread(s) {name}: not supported ({str(err).splitlines()[0]})")
                continue
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                op(a, b)
                times.append(time.perf_counter() - start)
            rate = 2 * size**3 / statistics.median(times) / 1e9
            print(f"{threads} thread(s) {name}: {rate:.0f} GFLOP/s ({size}^3, median of {runs})")


def _onnx_profile(model, example, calib, int8: bool, runs: int) -> list[tuple[str, float]]:
    """Per ONNX op type, milliseconds per batch from onnxruntime's own profiler."""
    import tempfile
    from collections import Counter

    import onnxruntime as ort

    from reslab.inference import export_onnx, quantize_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "fp32.onnx", example[:2])
        if int8:
            path = quantize_onnx(path, Path(tmp) / "int8.onnx", list(calib.split(16)))
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        options.intra_op_num_threads = __import__("torch").get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: example.numpy()}
        session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 1)
    return per_op.most_common(12)


def profile(spec: str, engine: str, calib_data: str | None, batch: int, runs: int) -> None:
    """Where one rung's time goes at ``batch``: torch.profiler's operators (torch engines) or
    onnxruntime's per-op-type kernel time (onnx engines)."""
    import torch

    from reslab.data import load_dataset
    from reslab.inference import calibration_images, get_engine
    from reslab.weights import resolve_model

    model = resolve_model(spec).eval()
    shape = tuple(model.default_cfg["input_size"])
    example = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    calib = None
    if calib_data:
        train = load_dataset(calib_data, "train", progress=False)
        calib = calibration_images(train, 128, model_cfg=model.default_cfg)
    print(f"# {spec}, engine {engine}, batch {batch}, {torch.get_num_threads()} threads")
    if engine.startswith("onnx"):
        rows = _onnx_profile(model, example, calib, engine == "onnx-int8", runs)
        total = sum(ms for _, ms in rows)
        for op, ms in rows:
            print(f"{op:<24} {ms:9.2f} ms/batch  {100 * ms / total:5.1f} %")
        return
    run = get_engine(engine).prepare(model, example=example[:2], calib=calib)
    run(example)
    run(example)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            run(example)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="measure (under the heavy lock)")
    r.add_argument("names", nargs="*", help="resnet50, resnet18, resnet20-fmnist, resnet20-cifar10")
    r.add_argument("--tag", default="", help="names the results: ladder-NAME-TAG.json (a machine)")
    t = sub.add_parser("table", help="Markdown table(s) from ladder JSON files")
    t.add_argument("files", nargs="+", type=Path)
    sub.add_parser("gemm", help="matmul GFLOP/s per dtype, 1 and 2 threads")
    f = sub.add_parser("profile", help="where one rung's time goes")
    f.add_argument("spec")
    f.add_argument("engine")
    f.add_argument("--calib", help="data set for the int8 rungs' calibration (training split)")
    f.add_argument("--batch", type=int, default=16)
    f.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if args.what == "run":
        run(args.names, args.tag)
    elif args.what == "gemm":
        gemm()
    elif args.what == "profile":
        profile(args.spec, args.engine, args.calib, args.batch, args.runs)
    else:
        print("\n\n".join(table(f) for f in args.files))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
