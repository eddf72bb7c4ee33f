"""The inference ladders of BENCHMARKS.md: ``reslab bench --ladder`` per model, under the heavy
lock, raw outputs kept in ``benchmarks/results/``, and the Markdown tables made from them.

    python benchmarks/ladder.py run [NAME ...]      # resnet50, resnet18, resnet20-fmnist, ...
    python benchmarks/ladder.py table benchmarks/results/ladder-resnet50.json

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


def run(names: list[str]) -> None:
    configs = _configs()
    for name in names or list(configs):
        bench = [sys.executable, "-m", "reslab", "bench", *configs[name], "--ladder"]
        bench += [*TIMING, "--calib-images", "128"]
        script = f"uptime; {shlex.join(bench)}; status=$?; uptime; exit $status"
        out, log = RESULTS / f"ladder-{name}.json", RESULTS / f"ladder-{name}.log"
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="measure (under the heavy lock)")
    r.add_argument("names", nargs="*", help="resnet50, resnet18, resnet20-fmnist, resnet20-cifar10")
    t = sub.add_parser("table", help="Markdown table(s) from ladder JSON files")
    t.add_argument("files", nargs="+", type=Path)
    args = p.parse_args()
    if args.what == "run":
        run(args.names)
    else:
        print("\n\n".join(table(f) for f in args.files))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
