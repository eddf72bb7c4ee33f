"""Experiment folders: a title, figures and result tables, listed in ``experiment.json``.

The contract (what an experiment writes so that ``reslab report`` shows it), in
``FOLDER/experiment.json``, a JSON object:

- ``title`` (required): a string.
- ``description``: text; blank lines separate paragraphs.
- ``command``: the command that made the folder, a string or a list of arguments.
- ``figures``: a list of image files (PNG, JPEG, GIF, WebP or SVG), each a path relative to
  the folder or ``{"file": PATH, "caption": TEXT}``.
- ``tables``: a list of result files (``.md`` Markdown, ``.json`` or ``.csv``), each a path
  or ``{"file": PATH, "title": TEXT}``. A JSON table is a list of objects (one row each) or
  ``{"columns": [...], "rows": [[...], ...]}``.
- ``facts``, ``environment``: objects of name → value, shown as two-column tables.
- ``version``: 1.

At least one figure or table; every path stays inside the folder; no other keys.
Without ``experiment.json``, a folder with ``results.md``, ``results.json`` or
``results.csv`` is an experiment too: titled by its name, showing those tables and every
image file directly in it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reslab.analysis.report.embed import file_image_bytes, image_html
from reslab.analysis.report.facts import read_json
from reslab.analysis.report.html import Markup, element, join, key_value_table
from reslab.analysis.report.tables import table_file_html

__all__ = [
    "FIGURE_SUFFIXES",
    "MANIFEST",
    "RESULTS_JSON",
    "RESULT_TABLES",
    "ExperimentManifest",
    "experiment_sections",
    "find_experiment",
    "read_manifest",
]

MANIFEST = "experiment.json"
RESULTS_JSON = "results.json"
RESULT_TABLES = ("results.md", RESULTS_JSON, "results.csv")
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")
KEYS = ("version", "title", "description", "command", "figures", "tables", "facts", "environment")


@dataclass
class ExperimentManifest:
    """An experiment folder's contents to show (see the module's contract)."""

    folder: Path
    title: str
    description: str = ""
    command: str = ""
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (file, caption)
    tables: list[tuple[Path, str]] = field(default_factory=list)  # (file, title)
    facts: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)


def _inside(folder: Path, name: Any, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: expected a file name, got {name!r}")
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ValueError(f"{where}: {name!r} is outside the experiment folder")
    if not path.is_file():
        raise ValueError(f"{where}: {name!r} does not exist")
    return path


def _entries(folder: Path, value: Any, key: str, label: str) -> list[tuple[Path, str]]:
    if not isinstance(value, list):
        raise ValueError(f"{MANIFEST}: {key!r} must be a list")
    out = []
    for i, entry in enumerate(value):
        where = f"{MANIFEST}: {key}[{i}]"
        if isinstance(entry, dict):
            unknown = set(entry) - {"file", label}
            if unknown:
                raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r}")
            text = entry.get(label, "")
            if not isinstance(text, str):
                raise ValueError(f"{where}: {label!r} must be a string")
            out.append((_inside(folder, entry.get("file"), where), text))
        else:
            out.append((_inside(folder, entry, where), ""))
    return out


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if isinstance(value, list) and key == "command" and all(isinstance(v, str) for v in value):
        return shlex.join(value)
    if not isinstance(value, str):
        raise ValueError(f"{MANIFEST}: {key!r} must be a string")
    return value


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{MANIFEST}: {key!r} must be an object of name -> value")
    return value


def read_manifest(folder: str | Path) -> ExperimentManifest:
    """Read and check ``FOLDER/experiment.json``; a one-line error names what is wrong."""
    folder = Path(folder)
    data = read_json(folder / MANIFEST)
    if not isinstance(data, dict):
        raise ValueError(f"{folder / MANIFEST}: expected a JSON object")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{MANIFEST}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if data.get("version", 1) != 1:
        raise ValueError(f"{MANIFEST}: version {data['version']!r}; this reslab reads version 1")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"{MANIFEST}: 'title' is required (a non-empty string)")
    manifest = ExperimentManifest(
        folder, title.strip(), _text(data, "description"), _text(data, "command"),
        _entries(folder, data.get("figures", []), "figures", "caption"),
        _entries(folder, data.get("tables", []), "tables", "title"),
        _table(data, "facts"), _table(data, "environment"),
    )  # fmt: skip
    if not manifest.figures and not manifest.tables:
        raise ValueError(f"{MANIFEST}: lists no figures and no tables")
    return manifest


def find_experiment(folder: str | Path) -> ExperimentManifest | None:
    """The folder's manifest; or, without one, its ``results.*`` tables and image files;
    or None when the folder is not an experiment."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        return read_manifest(folder)
    tables = [(folder / n, "") for n in RESULT_TABLES if (folder / n).is_file()]
    if not tables:
        return None
    figures = sorted(
        (p, "") for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FIGURE_SUFFIXES
    )
    return ExperimentManifest(folder, folder.resolve().name, figures=figures, tables=tables)


def experiment_sections(
    manifest: ExperimentManifest, here: dict[str, str]
) -> list[tuple[str, str, Markup]]:
    """``(id, title, body)`` sections: about, figures, tables, environment."""
    about = [element("p", p.strip()) for p in manifest.description.split("\n\n") if p.strip()]
    if manifest.command:
        about += [element("h3", "command"), element("div", manifest.command, class_="cmd")]
    if manifest.facts:
        about.append(key_value_table(manifest.facts))
    sections = [("about", "About", join(about))] if about else []
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
