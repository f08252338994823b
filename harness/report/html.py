"""The report as one self-contained HTML page: figures embedded as SVG data URIs, no external resource.

Laid out for reading and printing: the summary is split into narrow tables (``<table id="summary-accuracy">``,
``summary-cost``, ``summary-sharpness``, each of class ``summary``) that fit a 1400 px window without a
scrollbar, long texts wrap (``WRAP_COLUMNS``), and the print style (``@media print``: A4 landscape) shows every
column, repeats table headers on each page, and keeps a figure or a table row from being cut across pages.
Each figure links its PDF and PNG, written beside the page. A small script marks
``<body data-images-loaded="N/M">`` once the page has loaded (N images decoded out of M), which the browser
test reads.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from harness.report.tables import Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1600px;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82rem; margin: 0.6rem 0; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.45rem; text-align: right; white-space: nowrap; }
th { background: #f1f3f5; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
td.text, th.text { text-align: left; }
td.wrap { text-align: left; white-space: normal; min-width: 10rem; max-width: 34rem; overflow-wrap: anywhere; }
tbody.condition:nth-of-type(even) td { background: #fafbfc; }
tbody.condition { border-top: 2px solid #888; }
td.best { font-weight: 700; background: #e6f4ea !important; }
ul.warnings li { color: #8a4b00; }
td.error { text-align: left; white-space: normal; font-family: ui-monospace, monospace; color: #b00020; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; font-size: 0.78rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  .scroll { overflow: visible; }
  table { font-size: 7pt; }
  td { white-space: normal; overflow-wrap: anywhere; }
  td.wrap { min-width: 0; }
  thead { display: table-header-group; }
  th { position: static; }
  tr, figure, pre, p { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  figure img { max-height: 170mm; width: auto; }
  a { color: inherit; text-decoration: none; }
}
"""

SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; }
  }
  document.body.setAttribute("data-images-loaded", loaded + "/" + images.length);
});
"""

#: Columns whose cells are text (left-aligned) rather than numbers.
TEXT_COLUMNS = {"suite", "dataset", "model", "method", "status", "run_id", "setting", "optimizer", "scheduler"}
#: Text columns whose cells may be long: they wrap instead of widening the table.
WRAP_COLUMNS = {
    "paper / measured %",
    "other hyperparameters",
    "value",
    "folder",
    "host",
    "plugins",
    "commit",
    "error",
    "condition",
    "statement",
    "what the results lack",
    "to settle",
}
TEXT = ' class="text"'


@dataclass(frozen=True)
class Picture:
    """A figure: its PNG file's name (the PDF beside it has the same stem), caption and SVG bytes."""

    name: str
    caption: str
    svg: bytes

    @property
    def pdf(self) -> str:
        return f"{self.name.removesuffix('.png')}.pdf"


def table(data: Table, *, table_id: str | None = None, css_class: str | None = None) -> str:
    """``data`` as an HTML table; each condition is a ``<tbody>``, bold cells get class ``best``."""
    head = "".join(f"<th{TEXT if c in TEXT_COLUMNS | WRAP_COLUMNS else ''}>{escape(c)}</th>" for c in data.columns)
    bounds = [*data.breaks, len(data.rows)] if data.breaks else [0, len(data.rows)]
    bodies = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        rows = []
        for i in range(start, stop):
            cells = []
            for j, (column, value) in enumerate(zip(data.columns, data.rows[i], strict=True)):
                classes = [c for c, on in (("text", column in TEXT_COLUMNS), ("best", (i, j) in data.bold)) if on]
                if column in WRAP_COLUMNS:
                    classes = ["error" if column == "error" else "wrap"]
                attribute = f' class="{" ".join(classes)}"' if classes else ""
                cells.append(f"<td{attribute}>{escape(str(value))}</td>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        bodies.append(f'<tbody class="condition">{"".join(rows)}</tbody>')
    identifier = f' id="{table_id}"' if table_id else ""
    kind = f' class="{css_class}"' if css_class else ""
    return f'<div class="scroll"><table{identifier}{kind}><thead><tr>{head}</tr></thead>{"".join(bodies)}</table></div>'


def page(
    *,
    title: str,
    intro: Sequence[str],
    summary: Sequence[tuple[str, Table]],
    warnings: Sequence[str],
    failures: Table,
    errors: Sequence[tuple[str, str]],
    pictures: Sequence[Picture],
    sections: Sequence[tuple[str, Table, str]] = (),
) -> str:
    """The whole page. ``intro`` paragraphs are plain text; ``summary`` is the summary's (title, table) parts;
    ``errors`` are (run_id, full error text); ``sections`` are further (title, table, explanation) triples
    after the summary (hyperparameters, provenance, claims, tuning studies)."""
    parts = [f"<h1>{escape(title)}</h1>", *(f"<p>{escape(p)}</p>" for p in intro), "<h2>Summary</h2>"]
    for heading, data in summary:
        parts += [
            f"<h3>{escape(heading)}</h3>",
            table(data, table_id=f"summary-{_identifier(heading)}", css_class="summary"),
        ]
    for heading, data, explanation in sections:  # each table's id: its title, hyphenated ("claims-not-covered")
        parts += [
            f"<h2>{escape(heading)}</h2>",
            f"<p>{escape(explanation)}</p>",
            table(data, table_id=_identifier(heading)),
        ]
    if warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
        parts += ["<h2>Warnings</h2>", f'<ul class="warnings">{items}</ul>']
    parts.append(f"<h2>Failed and diverged runs ({len(failures.rows)})</h2>")
    if failures.rows:
        parts.append(table(failures, table_id="failures"))
        parts += [
            f"<details><summary>{escape(run_id)}: full error</summary><pre>{escape(text)}</pre></details>"
            for run_id, text in errors
        ]
    else:
        parts.append("<p>None: every run finished ok.</p>")
    parts.append("<h2>Figures</h2>")
    parts += [_figure(picture) for picture in pictures]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n<script>{SCRIPT}</script>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _figure(picture: Picture) -> str:
    """The figure as an embedded SVG, its caption linking the PDF and the PNG written beside the page."""
    data = base64.b64encode(picture.svg).decode("ascii")
    links = f'<a href="{escape(picture.pdf)}">PDF</a>, <a href="{escape(picture.name)}">PNG</a>'
    return (
        f'<figure id="{escape(picture.name)}"><img src="data:image/svg+xml;base64,{data}" '
        f'alt="{escape(picture.caption)}"><figcaption>{escape(picture.caption)} ({links})</figcaption></figure>'
    )


def _identifier(heading: str) -> str:
    """``Claims not covered`` -> ``claims-not-covered``."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
