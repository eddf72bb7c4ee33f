"""Result tables of an experiment folder as HTML: Markdown, JSON or CSV, every cell escaped.

Markdown is read in a small subset, enough for result files: headings, pipe tables,
bullet lists, fenced code, paragraphs, and inline ``code`` / **bold**. Links show as their
text (a report fetches nothing), raw HTML shows as text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from reslab.analysis.report.html import Markup, element, escape, join, table

__all__ = ["MAX_TABLE_BYTES", "markdown_html", "table_file_html"]

MAX_TABLE_BYTES = 2 * 2**20

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\([^)]*\)")
_ROW = re.compile(r"^\s*\|.*\|\s*$")
_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_ITEM = re.compile(r"^\s*[-*+]\s+")


def _inline(text: str) -> Markup:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(escape(text[pos : m.start()]))
        code, bold, link = m.groups()
        if code is not None:
            out.append(element("code", code))
        elif bold is not None:
            out.append(element("b", bold))
        else:
            out.append(escape(link))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("".join(out))


def _cells(line: str) -> list[Markup]:
    return [_inline(c.strip()) for c in line.strip().strip("|").split("|")]


def _until(lines: list[str], start: int, stop) -> int:
    """The first index from ``start`` whose line satisfies ``stop`` (or the end)."""
    return next((j for j in range(start, len(lines)) if stop(lines[j])), len(lines))


def _is_item(line: str) -> bool:
    return bool(_ITEM.match(line))


def _starts_block(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith(("```", "#", "|")) or _is_item(s)


def markdown_html(text: str) -> Markup:
    """A Markdown text (the subset above) as HTML."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            end = _until(lines, i + 1, lambda x: x.strip().startswith("```"))
            blocks.append(element("pre", "\n".join(lines[i + 1 : end])))
            end += 1
        elif _ROW.match(line):
            end = _until(lines, i, lambda x: not _ROW.match(x))
            has_head = end - i > 1 and bool(_RULE.match(lines[i + 1]))
            rows = [_cells(r) for r in lines[i:end] if not _RULE.match(r)]
            blocks.append(table(rows[0], rows[1:]) if has_head else table(None, rows))
        elif m := _HEADING.match(line):
            blocks.append(element(f"h{min(6, len(m.group(1)) + 2)}", _inline(m.group(2))))
            end = i + 1
        elif _is_item(line):
            end = _until(lines, i, lambda x: not _is_item(x))
            items = [element("li", _inline(_ITEM.sub("", x))) for x in lines[i:end]]
            blocks.append(element("ul", join(items)))
        elif line.strip():
            end = max(i + 1, _until(lines, i + 1, _starts_block))
            blocks.append(element("p", _inline(" ".join(x.strip() for x in lines[i:end]))))
        else:
            end = i + 1
        i = end
    return join(blocks)


def _json_table(value: Any) -> Markup:
    """A list of objects (one row each), or ``{"columns": [...], "rows": [[...], ...]}``."""
    if isinstance(value, dict) and isinstance(value.get("rows"), list):
        columns = value.get("columns")
        return table(
            columns if isinstance(columns, list) else None, [_row(r) for r in value["rows"]]
        )
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k in r))
        return table(columns, [[r.get(c) for c in columns] for r in value])
    raise ValueError('expected a list of objects or {"columns": [...], "rows": [[...]]}')


def _row(row: Any) -> list[Any]:
    return row if isinstance(row, list) else [row]


def table_file_html(path: Path) -> Markup:
    """A ``.md``, ``.json`` or ``.csv`` result file as HTML."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such table file")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise ValueError(f"{path}: too large for a report table")
    text = path.read_text(encoding="utf-8", errors="replace")
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown", ".txt"):
        return markdown_html(text)
    if suffix == ".json":
        try:
            return _json_table(json.loads(text))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        return table(rows[0], rows[1:]) if rows else Markup("")
    raise ValueError(f"{path}: a table must be .md, .json or .csv")
