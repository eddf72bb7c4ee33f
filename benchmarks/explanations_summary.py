"""``benchmarks/results/explanations.md``: the tables of BENCHMARKS.md's section on measured
explanations, from the ``explanations-*/`` result folders (``explanations.py``).

Besides the AUCs (mean ± std over the images), each method's **paired** gain over each
random map: per image, ``AUC(random) - AUC(method)`` for deletion and ``AUC(method) -
AUC(random)`` for insertion (positive: the method is better), mean ± standard error over the
images, and the share of images where the method is better.

    python3 benchmarks/explanations.py summary
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("random", "random-coarse")


def _pm(stats: dict) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _gain(mine: list[float], base: list[float], kind: str) -> str:
    sign = 1 if kind == "insertion" else -1
    diff = [sign * (a - b) for a, b in zip(mine, base)]
    n = len(diff)
    mean = sum(diff) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diff) / (n - 1) / n) if n > 1 else 0.0
    better = sum(d > 0 for d in diff) / n
    return f"{mean:+.3f} ± {se:.3f} ({100 * better:.0f} %)"


def _faithfulness_table(faith: dict) -> list[str]:
    lines = [
        "| method | deletion AUC ↓ | gain vs random | gain vs random-coarse | insertion AUC ↑ "
        "| gain vs random | gain vs random-coarse |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in faith["methods"]:
        cells = [m]
        for kind in ("deletion", "insertion"):
            rec = faith[kind][m]
            cells.append(_pm(rec["auc"]))
            for b in BASELINES:
                if m in BASELINES or b not in faith[kind]:
                    cells.append("")
                else:
                    base = faith[kind][b]["auc_per_image"]
                    cells.append(_gain(rec["auc_per_image"], base, kind))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cascade_table(rand: dict) -> list[str]:
    methods = rand["methods"]
    lines = [
        "| randomised (cumulative) | top-1 kept | " + " | ".join(methods) + " |",
        "|---|---:|" + "---:|" * len(methods),
    ]
    for s in rand["steps"]:
        cells = [f"+ {s['randomized']}", f"{s['top1_agreement']:.3f}"]
        cells += [_pm(s["correlation"][m]) for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    flagged = ", ".join(rand["flagged"]) or "none"
    lines.append("")
    lines.append(f"Flagged (mean correlation ≥ {rand['flag_threshold']} fully random): {flagged}.")
    return lines


def summarize(folder: Path) -> list[str]:
    report = json.loads((folder / "explanations.json").read_text())
    run = json.loads((folder / "run.json").read_text())
    faith = report["faithfulness"]
    command = " ".join(run["command"]).replace(str(ROOT) + "/", "")
    lines = [
        f"### {folder.name}: {report['model']} on {Path(report['data']).name}",
        "",
        f"`{command}` — {faith['images']} images, {faith['steps']} steps, "
        f"baseline {faith['baseline']}; {run['wall_s']} s wall, load {run['load_1min']:.2f} at "
        f"the start; {run['cpu']}, {run['threads']} threads, torch {run['torch']}, commit "
        f"{run['commit']}.",
        "",
        *_faithfulness_table(faith),
    ]
    if report.get("randomization"):
        lines += ["", *_cascade_table(report["randomization"])]
    return lines


def write_summary(results: Path) -> Path:
    folders = sorted(p for p in results.glob("explanations-*") if (p / "run.json").is_file())
    lines = ["# Measured explanations (benchmarks/explanations.py)", ""]
    for folder in folders:
        lines += [*summarize(folder), ""]
    out = results / "explanations.md"
    out.write_text("\n".join(lines))
    return out
