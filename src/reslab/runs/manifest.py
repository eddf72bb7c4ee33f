"""``experiment.json``: what ``reslab report`` shows of an experiment folder.

The contract, a JSON object:

- ``title`` (required): a string.
- ``description``: text; blank lines separate paragraphs.
- ``command``: the command that made the folder, a string or a list of arguments.
- ``figures``: a list of image files (PNG, JPEG, GIF, WebP or SVG), each a path relative to
  the folder or ``{"file": PATH, "caption": TEXT}``.
- ``tables``: a list of result files (``.md`` Markdown, ``.json`` or ``.csv``), each a path
  or ``{"file": PATH, "title": TEXT}``. A JSON table is a list of objects (one row each) or
  ``{"columns": [...], "rows": [[...], ...]}``.
- ``facts``, ``environment``: objects of name → value, shown as two-column tables.
- ``sections``: optional analyses shown with their own text, ``{"id": …, "title": …,
  "text": …, "figures": [...]}`` (figures as above).
- ``version``: 1.

At least one figure, table or section; every path, once links are resolved, stays inside the
folder and is a regular file; no other keys. Without ``experiment.json``, a folder with
``results.md``, ``results.json`` or ``results.csv`` is an experiment too: titled by its name,
showing those tables and the image files directly in it — again only regular files inside the
folder (anything else is listed as not shown, never read).
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reslab.files import atomic_write_json
from reslab.runs.members import RunFileError, member_path, read_json_member
from reslab.runs.names import EXPERIMENT_MANIFEST, RESULT_TABLES
from reslab.runs.schema import expect_object

__all__ = [
    "FIGURE_SUFFIXES",
    "ExperimentManifest",
    "ManifestSection",
    "find_experiment",
    "read_manifest",
    "write_manifest",
]

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")
KEYS = ("version", "title", "description", "command", "figures", "tables", "facts",
        "environment", "sections")  # fmt: skip
SECTION_KEYS = ("id", "title", "text", "figures")


@dataclass(frozen=True)
class ManifestSection:
    """An analysis shown on its own: a title, what it shows (text) and its figures."""

    id: str
    title: str
    text: str
    figures: list[tuple[Path, str]]


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
    sections: list[ManifestSection] = field(default_factory=list)
    not_shown: list[str] = field(default_factory=list)  # "name: why", found but refused


def _inside(folder: Path, name: Any, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise RunFileError(f"{where}: expected a file name, got {name!r}")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise RunFileError(f"{where}: {name!r} is outside the experiment folder")
    path = folder / name
    try:
        member_path(path.parent, path.name)
    except RunFileError as err:
        raise RunFileError(f"{where}: {err}") from None
    if not path.resolve().is_relative_to(folder.resolve()):
        raise RunFileError(f"{where}: {name!r} is outside the experiment folder")
    if not path.is_file():
        raise RunFileError(f"{where}: {name!r} does not exist")
    return path


def _entries(folder: Path, value: Any, where: str, label: str) -> list[tuple[Path, str]]:
    if not isinstance(value, list):
        raise RunFileError(f"{where} must be a list")
    out = []
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(entry, dict):
            unknown = set(entry) - {"file", label}
            if unknown:
                raise RunFileError(f"{at}: unknown key {sorted(unknown)[0]!r}")
            text = entry.get(label, "")
            if not isinstance(text, str):
                raise RunFileError(f"{at}: {label!r} must be a string")
            out.append((_inside(folder, entry.get("file"), at), text))
        else:
            out.append((_inside(folder, entry, at), ""))
    return out


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if isinstance(value, list) and key == "command" and all(isinstance(v, str) for v in value):
        return shlex.join(value)
    if not isinstance(value, str):
        raise RunFileError(f"{where}: {key!r} must be a string")
    return value


def _mapping(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunFileError(f"{where}: {key!r} must be an object of name -> value")
    return value


def _sections(folder: Path, value: Any, where: str) -> list[ManifestSection]:
    if not isinstance(value, list):
        raise RunFileError(f"{where}: 'sections' must be a list")
    out = []
    for i, entry in enumerate(value):
        at = f"{where}: sections[{i}]"
        entry = expect_object(Path(at), entry)
        unknown = sorted(set(entry) - set(SECTION_KEYS))
        if unknown:
            raise RunFileError(f"{at}: unknown key {unknown[0]!r}")
        ident, title = entry.get("id"), entry.get("title")
        if not isinstance(ident, str) or not ident.isidentifier():
            raise RunFileError(f"{at}: 'id' must be a name (letters, digits, _)")
        if not isinstance(title, str) or not title.strip():
            raise RunFileError(f"{at}: 'title' is required (a non-empty string)")
        figures = _entries(folder, entry.get("figures", []), f"{at}.figures", "caption")
        out.append(ManifestSection(ident, title.strip(), _text(entry, "text", at), figures))
    return out


def read_manifest(folder: str | Path) -> ExperimentManifest:
    """Read and check ``FOLDER/experiment.json``; a one-line error names what is wrong."""
    folder = Path(folder)
    where = str(folder / EXPERIMENT_MANIFEST)
    data = expect_object(Path(where), read_json_member(folder, EXPERIMENT_MANIFEST))
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise RunFileError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    if data.get("version", 1) != 1:
        raise RunFileError(f"{where}: version {data['version']!r}; this reslab reads version 1")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise RunFileError(f"{where}: 'title' is required (a non-empty string)")
    manifest = ExperimentManifest(
        folder, title.strip(), _text(data, "description", where), _text(data, "command", where),
        _entries(folder, data.get("figures", []), f"{where}: figures", "caption"),
        _entries(folder, data.get("tables", []), f"{where}: tables", "title"),
        _mapping(data, "facts", where), _mapping(data, "environment", where),
        _sections(folder, data.get("sections", []), where),
    )  # fmt: skip
    if not (manifest.figures or manifest.tables or manifest.sections):
        raise RunFileError(f"{where}: lists no figures, tables or sections")
    return manifest


def _checked(folder: Path, name: str, not_shown: list[str]) -> Path | None:
    try:
        path = member_path(folder, name)
    except RunFileError as err:
        not_shown.append(str(err))
        return None
    return path if path.is_file() else None


def find_experiment(folder: str | Path) -> ExperimentManifest | None:
    """The folder's manifest; or, without one, its ``results.*`` tables and image files (only
    regular files inside the folder); or None when the folder is not an experiment."""
    folder = Path(folder)
    if (folder / EXPERIMENT_MANIFEST).exists() or (folder / EXPERIMENT_MANIFEST).is_symlink():
        return read_manifest(folder)
    not_shown: list[str] = []
    tables = [(p, "") for n in RESULT_TABLES if (p := _checked(folder, n, not_shown))]
    if not tables:
        return None
    images = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in FIGURE_SUFFIXES)
    figures = [(p, "") for n in images if (p := _checked(folder, n, not_shown))]
    return ExperimentManifest(
        folder, folder.resolve().name, figures=figures, tables=tables, not_shown=not_shown
    )


def write_manifest(
    folder: Path,
    title: str,
    description: str,
    *,
    figures: Sequence[dict[str, str]],
    tables: Sequence[dict[str, str]],
    facts: dict[str, Any],
    sections: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write ``experiment.json`` (the title, text, figures, result tables and analysis
    sections of the folder, for ``reslab report``)."""
    manifest: dict[str, Any] = {
        "version": 1,
        "title": title,
        "description": description,
        "command": ["reslab", *sys.argv[1:]] if sys.argv[1:] else "reslab",
        "figures": list(figures),
        "tables": list(tables),
        "facts": {
            k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
            for k, v in facts.items()
        },  # fmt: skip
    }
    if sections:
        manifest["sections"] = list(sections)
    return atomic_write_json(folder / EXPERIMENT_MANIFEST, manifest)
