"""``write_report(FOLDER)``: one self-contained HTML page about a run or an experiment.

The page is a single file: images are ``data:`` URIs, the CSS is inline, there is no script
and nothing is fetched from a network (a Content-Security-Policy forbids it too), so it
opens offline and survives being mailed. It is written atomically.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from reslab.analysis.report.environment import environment
from reslab.analysis.report.evaluate import analyze, load_test_data
from reslab.analysis.report.experiment import experiment_sections
from reslab.analysis.report.facts import collect_run
from reslab.analysis.report.html import page
from reslab.analysis.report.model_page import model_sections
from reslab.analysis.report.run_page import run_sections
from reslab.analysis.report.why import why_section
from reslab.data.datasets import ImageDataset
from reslab.files import atomic_write_text
from reslab.models import ResNet
from reslab.runs import RunFolder, claim, find_experiment, names
from reslab.version import __version__
from reslab.weights import load_checkpoint

__all__ = ["REPORT_NAME", "build_model_report", "build_report", "write_report"]

REPORT_NAME = names.REPORT


def _footer() -> str:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"Made by reslab {__version__} on {now}. One self-contained file: images embedded, "
        "no script, nothing loaded from a network."
    )


def build_report(
    folder: str | Path,
    *,
    limit: int | None = 2000,
    top: int = 12,
    method: str = "gradcam",
    layer: str | None = None,
    device: str | None = None,
) -> str:
    """The HTML of ``folder``'s report: an experiment folder (``experiment.json``, or
    ``results.md/.json/.csv``) shows its figures and tables; a run folder (a model or a
    checkpoint) its command, config, data, curves, metrics and, from its model on its test
    data, per-class accuracy, confusion matrix and top losses with class activation maps.

    Args:
        limit: test images to analyse at most (a fixed random subset; None: all).
        top: most confidently wrong images to show (0: none).
        method, layer: how their class maps are computed.
        device: where the model runs (default: CUDA when available).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    here = environment()
    manifest = find_experiment(folder)
    if manifest is not None:
        why = why_section(manifest)  # a degradation experiment: its figures move in there
        sections = experiment_sections(replace(manifest, figures=[]) if why else manifest, here)
        if why:
            sections.insert(1 if sections[0][0] == "about" else 0, why)
        return page(manifest.title, f"experiment · {folder.resolve().name}", sections, _footer())
    if RunFolder(folder).model_file() is None:
        raise ValueError(
            f"{folder}: neither a run folder ({' or '.join(names.MODEL_FILES)}) nor an "
            f"experiment folder ({names.EXPERIMENT_MANIFEST}, or results.md/.json/.csv)"
        )
    facts = collect_run(folder)
    analysis, error = None, None
    try:  # the test data may be gone (another machine, a moved folder): a note, not a failure
        dataset = load_test_data(facts.config)
    except (ValueError, OSError) as err:
        error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    else:
        model = load_checkpoint(facts.model_path)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        analysis = analyze(
            model, dataset, data=str(facts.config["data"]), limit=limit, top=top, method=method,
            layer=layer,
        )  # fmt: skip
    subtitle = f"{facts.recipe} run · {folder.resolve().name}"
    return page(facts.title, subtitle, run_sections(facts, analysis, error, here), _footer())


def build_model_report(
    model: ResNet,
    dataset: ImageDataset,
    *,
    spec: str,
    data: str,
    split: str = "test",
    argv: Sequence[str] | None = None,
    class_index: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    **options: Any,
) -> str:
    """The HTML report of ``model`` (named ``spec``) on ``dataset`` (named ``data``,
    ``split``): the model, the command (``argv``), per-class accuracy, confusion matrix and
    top losses with class maps. ``class_index`` / ``class_names``: see
    :func:`~reslab.analysis.report.evaluate.analyze`; ``options``: ``limit``, ``top``,
    ``method``, ``layer``."""
    analysis = analyze(
        model, dataset, data=data, split=split, class_index=class_index,
        class_names=class_names, **options,
    )  # fmt: skip
    sections = model_sections(model, spec, analysis, argv, environment())
    title = f"{spec} on {Path(data).name or data}"
    return page(title, f"model report · {split} split", sections, _footer())


def write_report(folder: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Build the report of ``folder`` (:func:`build_report`, ``options`` go to it) and write
    it atomically to ``out`` (default ``FOLDER/report.html``)."""
    html = build_report(folder, **options)
    return atomic_write_text(
        claim(Path(out) if out is not None else Path(folder) / REPORT_NAME), html
    )
