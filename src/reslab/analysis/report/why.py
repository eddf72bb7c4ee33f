"""The argument of a degradation experiment's page: why residual connections work, in four
measurements, each with what it shows and the paper it comes from.

1. the degradation curves (the experiment's own figure and its results),
2. block lesions (``reslab analyze blocks RUN_DIR`` writes ``runs/<run>/blocks.json``),
3. loss landscapes (``reslab analyze landscape EXP_DIR`` writes ``landscape.json`` in the
   folder or a sub-folder of it),
4. shattered gradients (``reslab analyze gradients …`` writes ``gradients.json`` likewise).

A measurement not made yet is shown as the command that makes it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from reslab.analysis.landscape_plot import landscape_figure
from reslab.analysis.report.embed import figure_html, file_image_bytes, image_html
from reslab.analysis.report.html import Markup, element, join, table
from reslab.analysis.shattered_plot import gradients_figure
from reslab.runs import (
    ExperimentManifest,
    RunFileError,
    existing_member,
    member_path,
    names,
    read_json_file,
    read_json_member,
    read_results,
)

__all__ = ["PAPERS", "degradation_runs", "find_analyses", "why_section"]

Section = tuple[str, str, Markup]

# What each measurement shows (two sentences) and where it comes from.
PAPERS = {
    "degradation": (
        "A deeper plain network reaches a higher training error than a shallower one, so the "
        "problem is optimisation, not overfitting; with identity shortcuts the deeper network "
        "is the better one. He, Zhang, Ren and Sun, “Deep Residual Learning for Image "
        "Recognition” (CVPR 2016), Fig. 1 and 6."
    ),
    "lesions": (
        "Each point is the test accuracy of the trained network with one block removed (a "
        "residual block keeps its shortcut; a plain block becomes the identity where shapes "
        "allow): a network that behaves like an ensemble of shallow paths barely notices, a "
        "chain breaks. Veit, Wilber and Belongie, “Residual Networks Behave Like Ensembles of "
        "Relatively Shallow Networks” (NeurIPS 2016), Fig. 3."
    ),
    "landscapes": (
        "The training loss around the trained weights along random directions, each filter "
        "scaled to its own weights' norm so that networks compare: in the paper ResNet-56's "
        "surface is smooth and nearly convex and the plain 56-layer net's is chaotic. Li, Xu, "
        "Taylor, Studer and Goldstein, “Visualizing the Loss Landscape of Neural Nets” "
        "(NeurIPS 2018), Fig. 5; the sharpness numbers are PyHessian's (Yao et al. 2020)."
    ),
    "gradients": (
        "The gradient of a logit with respect to the input, taken at points along a line of "
        "inputs, decorrelates with depth in a plain network until it is white noise (lag-1 "
        "correlation near 0), while skip connections keep it correlated. Balduzzi, Frean, "
        "Leary, Lewis, Ma and McWilliams, “The Shattered Gradients Problem: If resnets are "
        "the answer, then what is the question?” (ICML 2017), Fig. 1 and 3."
    ),
}


def degradation_runs(results: Any) -> list[dict[str, Any]] | None:
    """The runs of a degradation experiment (its ``results.json``, with arm, depth and seed
    per run), each with its run folder name; None for another kind of experiment."""
    runs = results.get("runs") if isinstance(results, dict) else None
    if not isinstance(runs, list) or not runs:
        return None
    if not all(isinstance(r, dict) and {"arm", "depth", "seed"} <= set(r) for r in runs):
        return None
    return [{**r, "run": r.get("run") or f"{r['arm']}{r['depth']}-s{r['seed']}"} for r in runs]


def find_analyses(folder: Path, name: str) -> list[Path]:
    """``name`` in the folder and in its direct sub-folders (not its run folders): only
    regular files inside the folder (links resolved)."""
    places = [folder]
    for p in sorted(folder.iterdir()):
        if p.name == names.RUNS_DIR:
            continue
        try:
            places.append(member_path(folder, p.name, directory=True))
        except RunFileError:  # a file, or a folder outside: not a place for analyses
            continue
    found = []
    for place in places:
        try:
            path = existing_member(place, name)
        except RunFileError:
            continue
        if path is not None:
            found.append(path)
    return found


def _missing(command: list[str]) -> Markup:
    return element(
        "p", join(["Not measured yet: ", element("code", shlex.join(command))]), class_="note"
    )


def _pct(mean: float | None, std: float | None) -> str:
    return "—" if mean is None else f"{100 * mean:.2f} ± {100 * (std or 0):.2f}"


def _degradation(manifest: ExperimentManifest, results: dict[str, Any]) -> Markup:
    parts = [element("p", PAPERS["degradation"])]
    for path, caption in manifest.figures:
        parts.append(
            element(
                "figure",
                join([image_html(file_image_bytes(path), caption), element("figcaption", caption)]),
            )
        )
    summary = results.get("summary") or []
    rows = [
        [
            r["arm"],
            r["depth"],
            _pct(r.get("train_error_mean"), r.get("train_error_std")),
            _pct(r.get("test_error_mean"), r.get("test_error_std")),
            r.get("n"),
        ]
        for r in sorted(summary, key=lambda r: (r["depth"], r["arm"]))
    ]
    if rows:
        headers = ["arm", "depth", "clean training error %", "test error %", "seeds"]
        parts.append(table(headers, rows))
    return join(parts)


def _lesions(folder: Path, runs: list[dict[str, Any]]) -> Markup:
    from reslab.analysis.report.why_charts import lesions_figure

    found = []
    for run in runs:
        report = read_json_member(folder / names.RUNS_DIR / run["run"], names.BLOCKS_JSON)
        if isinstance(report, dict) and report.get("blocks"):
            found.append((run, report))
    parts = [element("p", PAPERS["lesions"])]
    if not found:
        example = f"{folder}/runs/{runs[0]['run']}"
        return join(parts + [_missing(["reslab", "analyze", "blocks", example, "--data", "D"])])
    caption = (
        f"{len(found)} run(s) with blocks.json; dashed: the accuracy with nothing "
        "removed; gaps: plain blocks that change shape cannot be removed"
    )
    parts.append(figure_html(lesions_figure(found), "block lesions", caption))
    return join(parts)


def _hessian_rows(entries: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in entries:
        h = e.get("hessian")
        if h:
            top = ", ".join(f"{v:.4g}" for v in h["eigenvalues"])
            rows.append(
                [
                    e.get("label"),
                    top,
                    f"{h['trace']:.4g} ± {h['trace_stderr']:.2g}",
                    h.get("images"),
                ]
            )
    return rows


def _landscapes(folder: Path) -> Markup:
    parts = [element("p", PAPERS["landscapes"])]
    files = find_analyses(folder, names.LANDSCAPE_JSON)
    if not files:
        return join(
            parts
            + [
                _missing(
                    ["reslab", "analyze", "landscape", str(folder), "--data", "D", "--hessian"]
                )
            ]
        )
    for path in files:
        data = read_json_file(path)
        entries = data.get("entries") or []
        caption = (
            f"{data.get('dims')}-D, {data.get('steps')} steps over ±{data.get('span')}, "
            f"{data.get('data', {}).get('images')} {data.get('data', {}).get('split')} "
            f"images of {data.get('data', {}).get('data')}, directions from seed "
            f"{data.get('direction_seed')} ({path.relative_to(folder)})"
        )
        parts.append(figure_html(landscape_figure(entries), "loss landscapes", caption))
        rows = _hessian_rows(entries)
        if rows:
            parts.append(
                table(["network", "top Hessian eigenvalues", "trace (Hutchinson)", "images"], rows)
            )
    return join(parts)


def _gradients(folder: Path) -> Markup:
    parts = [element("p", PAPERS["gradients"])]
    files = find_analyses(folder, names.GRADIENTS_JSON)
    if not files:
        return join(
            parts
            + [
                _missing(
                    [
                        "reslab",
                        "analyze",
                        "gradients",
                        "--depths",
                        "20,56,110",
                        "--out",
                        str(folder),
                    ]
                )
            ]
        )
    for path in files:
        data = read_json_file(path)
        line = data.get("line", {})
        caption = (
            f"{data.get('output')}, {line.get('points')} points along a "
            f"{line.get('kind')} line ({path.relative_to(folder)})"
        )
        parts.append(figure_html(gradients_figure(data), "shattered gradients", caption))
        rows = [
            [
                f"{r['arm']}-{r['depth']}" if r.get("depth") else r["arm"],
                r["weights"],
                f"{r['lag1_mean']:.3f} ± {r['lag1_std']:.3f}",
                "—"
                if r["correlation_length_mean"] is None
                else f"{r['correlation_length_mean']:.2f} ± {r['correlation_length_std']:.2f}",
                r["n"],
            ]
            for r in data.get("summary", [])
        ]
        parts.append(
            table(
                ["network", "weights", "lag-1 correlation", "correlation length (points)", "seeds"],
                rows,
            )
        )
    return join(parts)


def _guarded(make, *args) -> Markup:
    """One measurement's content; a file that is not what reslab writes becomes a note (the
    rest of the page still shows)."""
    try:
        return make(*args)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        return element("p", f"could not show this measurement: {err!r}", class_="note")


def why_section(manifest: ExperimentManifest) -> Section | None:
    """The section of a degradation experiment folder (None for other folders): the four
    measurements, in order, each with its two sentences."""
    folder = manifest.folder
    results = read_results(folder)
    runs = degradation_runs(results)
    if runs is None:
        return None
    items = [
        ("why-degradation", "1. Degradation", _guarded(_degradation, manifest, results)),
        ("why-lesions", "2. Block lesions", _guarded(_lesions, folder, runs)),
        ("why-landscapes", "3. Loss landscapes", _guarded(_landscapes, folder)),
        ("why-gradients", "4. Shattered gradients", _guarded(_gradients, folder)),
    ]
    body = [
        element(
            "p",
            "Four measurements of the same networks, each from the paper that made it "
            "famous. The numbers are this folder's; where they differ from the papers', the "
            "training budget (see About) is the first suspect.",
        )
    ]
    body += [
        element("section", join([element("h3", title), content]), id=ident)
        for ident, title, content in items
    ]
    return "why", "Why residual connections work", join(body)
