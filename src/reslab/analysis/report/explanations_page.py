"""The report's section for ``explanations.json`` (``reslab analyze explanations``), shown
on a run's page when the run folder holds one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reslab.analysis.explanations import BASELINE_MAPS
from reslab.analysis.explanations_plot import explanations_figure
from reslab.analysis.report.embed import figure_html, file_image_bytes, image_html
from reslab.analysis.report.html import Markup, element, join, key_value_table, table
from reslab.runs import RunFileError, existing_member, names, read_json_file

__all__ = ["EXPLANATIONS_SECTION", "explanations_section"]

EXPLANATIONS_SECTION = "explanations"
TITLE = "Explanations, measured"

INTRO = (
    "Are the class maps faithful to the model? Deletion and insertion (Petsiuk et al., RISE, "
    "BMVC 2018): each image's pixels are removed (or revealed), most relevant first, and the "
    "probability of the explained class is followed; a faithful map has a lower deletion "
    "and a higher insertion area under the curve (AUC) than a random map (random: pixel "
    "noise; random-coarse: noise on Grad-CAM's grid, upsampled, blobs of Grad-CAM's size). Model "
    "randomisation (Adebayo et al., Sanity Checks for Saliency Maps, NeurIPS 2018): the "
    "model's stages are re-initialised from the head down, one more at each step, and each "
    "map is compared with the trained model's by Spearman rank correlation; a map that "
    "barely changes explains the image, not what the model learned."
)


def _pm(stats: dict[str, Any]) -> str:
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _faithfulness(faith: dict[str, Any]) -> list[Markup]:
    rows = []
    for m in faith["methods"]:
        name = f"{m} (baseline)" if m in BASELINE_MAPS else m
        rows.append([name, _pm(faith["deletion"][m]["auc"]), _pm(faith["insertion"][m]["auc"])])
    setup = (
        f"{faith['images']} images, the model's top-1 class each; {faith['steps']} steps; "
        f"removed pixels become the image's {faith['baseline']} version. "
        "AUC mean ± std over the images."
    )
    headers = ["method", "deletion AUC (lower is better)", "insertion AUC (higher is better)"]
    return [element("h3", "deletion and insertion"), element("p", setup), table(headers, rows)]


def _randomization(rand: dict[str, Any]) -> list[Markup]:
    methods = rand["methods"]
    rows = [
        [f"+ {s['randomized']}", s["top1_agreement"], *(_pm(s["correlation"][m]) for m in methods)]
        for s in rand["steps"]
    ]
    flagged = rand["flagged"]
    verdict = (
        f"Flagged (mean correlation still ≥ {rand['flag_threshold']} with every stage random): "
        + (", ".join(flagged) if flagged else "none")
        + "."
    )
    headers = ["randomised (cumulative)", "top-1 class kept", *methods]
    return [
        element("h3", f"model randomisation ({rand['images']} images)"),
        table(headers, rows),
        element("p", verdict),
    ]


def _body(folder: Path, report: dict[str, Any]) -> Markup:
    about: dict[str, Any] = {
        k: report[k] for k in ("model", "data", "split", "seconds") if k in report
    }
    parts: list[Markup] = [element("p", INTRO), key_value_table(about)]
    if report.get("faithfulness"):
        parts += _faithfulness(report["faithfulness"])
    if report.get("randomization"):
        parts += _randomization(report["randomization"])
    caption = "Mean curves over the images (dashed: the random maps) and the mean rank "
    caption += "correlation along the randomisation (band: ± one std; dotted: the flag line)."
    parts.append(figure_html(explanations_figure(report), "explanation curves", caption))
    cascade = existing_member(folder, names.EXPLANATIONS_CASCADE_PNG)  # inside, regular
    if report.get("randomization") and cascade is not None:  # not one left by an earlier run
        png = file_image_bytes(cascade)
        text = "One image's maps as the model is randomised from the head down."
        parts.append(
            element("figure", join([image_html(png, "randomisation cascade"),
                                    element("figcaption", text)]))
        )  # fmt: skip
    return join(parts)


def explanations_section(folder: Path) -> tuple[str, str, Markup] | None:
    """The section, or None when ``folder`` has no ``explanations.json``; a file that
    cannot be read gets a note instead."""
    try:
        path = existing_member(folder, names.EXPLANATIONS_JSON)
    except RunFileError as err:
        return EXPLANATIONS_SECTION, TITLE, element("p", str(err), class_="note")
    if path is None:
        return None
    try:
        report = read_json_file(path)
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
        body = _body(Path(folder), report)
    except (ValueError, KeyError, TypeError, OSError) as err:
        why = str(err).strip() or type(err).__name__
        text = f"{names.EXPLANATIONS_JSON} could not be shown: {why}"
        body = element("p", text, class_="note")
    return EXPLANATIONS_SECTION, TITLE, body
