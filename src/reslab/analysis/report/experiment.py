"""The sections of an experiment folder's page: its about text, figures, result tables,
analysis sections and environment, from its manifest (:mod:`reslab.runs.manifest`, the
``experiment.json`` contract, which also decides what may be embedded: only regular files
inside the folder)."""

from __future__ import annotations

from pathlib import Path

from reslab.analysis.report.embed import file_image_bytes, image_html
from reslab.analysis.report.html import Markup, element, join, key_value_table
from reslab.analysis.report.tables import table_file_html
from reslab.runs import ExperimentManifest

__all__ = ["experiment_sections"]


def experiment_sections(
    manifest: ExperimentManifest, here: dict[str, str]
) -> list[tuple[str, str, Markup]]:
    """``(id, title, body)`` sections: about, figures, tables, environment."""
    about = [element("p", p.strip()) for p in manifest.description.split("\n\n") if p.strip()]
    if manifest.command:
        about += [element("h3", "command"), element("div", manifest.command, class_="cmd")]
    if manifest.facts:
        about.append(key_value_table(manifest.facts))
    about.extend(element("p", f"not shown: {why}", class_="note") for why in manifest.not_shown)
    sections = [("about", "About", join(about))] if about else []
    for extra in manifest.sections:
        body = [element("p", p.strip()) for p in extra.text.split("\n\n") if p.strip()]
        body += [_figure(path, caption) for path, caption in extra.figures]
        sections.append((f"x-{extra.id}", extra.title, join(body)))
    if manifest.figures:
        figures = [_figure(path, caption) for path, caption in manifest.figures]
        sections.append(("figures", "Figures", join(figures)))
    if manifest.tables:
        tables = [
            join([element("h3", title or path.name), table_file_html(path)])
            for path, title in manifest.tables
        ]
        sections.append(("tables", "Results", join(tables)))
    env = [element("h3", "the experiment"), key_value_table(manifest.environment)]
    env = (env if manifest.environment else []) + [
        element("h3", "this report"),
        key_value_table(here),
    ]
    sections.append(("environment", "Environment", join(env)))
    return sections


def _figure(path: Path, caption: str) -> Markup:
    parts = [image_html(file_image_bytes(path), caption or path.name)]
    parts.append(element("figcaption", caption or path.name))
    return element("figure", join(parts))
