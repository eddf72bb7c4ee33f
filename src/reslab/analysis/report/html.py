"""A tiny HTML template with escaping by default.

Every value placed into a page goes through :func:`escape` unless it is :class:`Markup`
(HTML built here, from escaped parts). Class names, config values, captions and table cells
are user-controlled: a class called ``<script>alert(1)</script>`` must come out as text.

The page carries a Content-Security-Policy that allows no script and no network: images only
from ``data:`` URIs and inline styles. So even a mistake in escaping could not run code or
fetch anything when the file is opened from a mail.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Markup",
    "element",
    "escape",
    "format_value",
    "join",
    "key_value_grid",
    "key_value_table",
    "page",
    "section",
    "table",
]

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'"
)

STYLE = """
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; color: #1d2330;
  background: #fff; margin: 0 auto; max-width: 1100px; padding: 1.2em 2em 3em; line-height: 1.45; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.2em; border-bottom: 2px solid #dde3ee; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.02em; margin: 1.2em 0 0.4em; }
.sub { color: #5a6476; margin: 0 0 1em; }
nav { font-size: 0.92em; color: #5a6476; }
nav span + span:before { content: " · "; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #d5dbe6; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f1f4f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre, .cmd { font-family: "Liberation Mono", "DejaVu Sans Mono", monospace; font-size: 0.9em; }
pre, .cmd { background: #f5f7fa; border: 1px solid #e1e6ee; padding: 0.6em 0.8em;
  white-space: pre-wrap; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.8em 0; }
.card { border: 1px solid #d5dbe6; border-radius: 6px; padding: 0.5em 0.9em; min-width: 8em; }
.card b { display: block; font-size: 1.35em; }
.card span { color: #5a6476; font-size: 0.85em; }
img { max-width: 100%; height: auto; }
figure { margin: 0.6em 0 1.2em; }
figcaption { color: #5a6476; font-size: 0.88em; }
.grid { display: flex; flex-wrap: wrap; gap: 0.9em; }
.grid figure { margin: 0; width: 250px; }
.bar { background: #4c78a8; height: 0.8em; display: inline-block; vertical-align: middle; }
.note { color: #8a5a00; background: #fff6e0; border: 1px solid #f0d9a0; padding: 0.4em 0.8em; }
footer { margin-top: 3em; color: #5a6476; font-size: 0.85em; }
"""


class Markup(str):
    """A string of trusted HTML: :func:`escape` leaves it as it is."""

    __slots__ = ()


def escape(value: Any) -> Markup:
    """``value`` as HTML text: ``& < > " '`` escaped (Markup passes through)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "\n") -> Markup:
    """Parts joined, each escaped unless Markup."""
    return Markup(sep.join(escape(p) for p in parts))


def element(tag: str, content: Any = "", **attrs: Any) -> Markup:
    """``<tag attr="…">content</tag>``; attribute values and content escaped. A trailing
    underscore is dropped from attribute names (``class_``); None or False leaves one out."""
    if not tag.isalnum():
        raise ValueError(f"bad tag name {tag!r}")
    shown = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        shown.append(f' {name}="{escape(value)}"')
    return Markup(f"<{tag}{''.join(shown)}>{escape(content)}</{tag}>")


def format_value(value: Any) -> str:
    """A cell's text: floats with 4 significant decimals, lists comma-joined, None as —."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return (
            f"{value:.4g}"
            if abs(value) < 1e-3 or abs(value) >= 1e5
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    return str(value)


def _cell(tag: str, value: Any) -> Markup:
    if isinstance(value, Markup):
        return element(tag, value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return element(tag, format_value(value), class_="num" if numeric else None)


def table(headers: Sequence[Any] | None, rows: Iterable[Sequence[Any]]) -> Markup:
    """An HTML table; numbers right-aligned, every cell escaped unless Markup."""
    head = element("tr", join(_cell("th", h) for h in headers)) if headers else Markup("")
    body = join(element("tr", join(_cell("td", v) for v in row)) for row in rows)
    return element("table", join([head, body]))


def key_value_table(values: Mapping[str, Any]) -> Markup:
    """A two-column table: one row per key."""
    rows = (element("tr", join([element("th", k), _cell("td", v)])) for k, v in values.items())
    return element("table", join(rows))


def key_value_grid(values: Mapping[str, Any], columns: int = 3) -> Markup:
    """Name/value pairs, ``columns`` pairs per row: long configs stay short on the page."""
    items = list(values.items())
    rows = []
    for start in range(0, len(items), columns):
        cells = []
        for k, v in items[start : start + columns]:
            cells += [element("th", k), _cell("td", v)]
        rows.append(element("tr", join(cells)))
    return element("table", join(rows))


def section(ident: str, title: str, *body: Any) -> Markup:
    """``<section id=…><h2>title</h2>…</section>``."""
    return element("section", join([element("h2", title), *body]), id=ident)


def page(
    title: str, subtitle: str, sections: Sequence[tuple[str, str, Markup]], footer: str
) -> str:
    """The whole document: inline CSS, a strict Content-Security-Policy, a table of contents
    of ``(id, title, body)`` sections."""
    nav = element(
        "nav", join(element("span", element("a", t, href=f"#{i}")) for i, t, _ in sections)
    )
    body = join(
        [
            element("h1", title),
            element("p", subtitle, class_="sub"),
            nav,
            *(section(i, t, b) for i, t, b in sections),
            element("footer", footer),
        ]
    )
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
