"""The report document as one self-contained HTML page.

Plots are embedded as base64 ``data:`` URIs and the style sheet is inline: the page loads
nothing from anywhere (no fonts, scripts or links out), so it opens offline, can be mailed as
one file, and prints cleanly (figures and table rows are not split across pages).
"""

from __future__ import annotations

import base64
import html
import re
import urllib.parse
from pathlib import Path

from cxr_tune import __version__
from cxr_tune.report.document import (
    Block,
    Bullets,
    Document,
    Figure,
    Links,
    Paragraph,
    Section,
    Table,
)

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #1b1b1b; max-width: 72rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #d8dde3; padding-bottom: .2rem;
  margin-top: 2.2rem; }
h3 { font-size: 1.08rem; margin-top: 1.6rem; }
p, li { max-width: 60rem; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .85rem; }
th, td { border: 1px solid #d0d5db; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .86em;
  background: #f1f3f5; padding: 0 .2em; border-radius: 3px; overflow-wrap: anywhere; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e6e9ed; }
figcaption, .caption { font-size: .85rem; color: #555; }
nav.toc { background: #f6f8fa; border: 1px solid #e1e4e8; padding: .4rem 1rem;
  display: inline-block; }
nav.toc ol { margin: .2rem 0; padding-left: 1.2rem; }
footer { margin-top: 3rem; font-size: .8rem; color: #777; }
@media print {
  body { max-width: none; font-size: 10pt; padding: 0; }
  nav.toc { display: none; }
  h2, h3 { break-after: avoid; }
  figure, tr, li { break-inside: avoid; }
  .wrap { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""
# Cells right-aligned as numbers: 0.8123, -1.51, 12 s, 95%, 0.81 [0.76, 0.86], [0.76, 0.86].
_NUMBER = re.compile(r"^([+\-−]?\d[\d.,]*(e[+\-]?\d+)?\s*(%|s)?)?(\s*\[[^\]]*\])?$")


def render(doc: Document, out: Path) -> str:
    """The HTML page of ``doc``; figure files are read from under ``out`` and embedded."""
    ids: set[str] = set()
    body = [f"<h1>{_inline(doc.title)}</h1>", _contents(doc)]
    body += [_section(section, out, ids) for section in doc.sections]
    body.append(f"<footer>Written by cxr_tune {html.escape(__version__)}.</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_inline(doc.title)}: cxr_tune report</title>\n<style>{STYLE}</style>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _contents(doc: Document) -> str:
    items = [
        f'<li><a href="#{s.anchor}">{_inline(s.title)}</a></li>'
        for s in doc.sections
        if s.level == 2
    ]
    return f'<nav class="toc"><strong>Contents</strong><ol>{"".join(items)}</ol></nav>'


def _section(section: Section, out: Path, ids: set[str]) -> str:
    anchor = _unique(section.anchor or "section", ids)
    level = min(max(section.level, 2), 6)
    parts = [f'<h{level} id="{anchor}">{_inline(section.title)}</h{level}>']
    parts += [_block(block, out) for block in section.blocks]
    return "\n".join(parts)


def _unique(anchor: str, ids: set[str]) -> str:
    candidate, n = anchor, 1
    while candidate in ids:
        n += 1
        candidate = f"{anchor}-{n}"
    ids.add(candidate)
    return candidate


def _block(block: Block, out: Path) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return _figure(block, out)
    if isinstance(block, Links):
        return "<ul>" + "".join(_link(label, path) for label, path in block.items) + "</ul>"
    raise TypeError(f"Unknown block {type(block).__name__}")


def _table(table: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in table.headers)
    rows = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in table.rows)
    caption = f'<p class="caption">{_inline(table.caption)}</p>' if table.caption else ""
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f'<div class="wrap">{table_html}</div>{caption}'


def _cell(value: str) -> str:
    numeric = bool(value.strip()) and bool(_NUMBER.match(value.strip()))
    return f'<td class="num">{_inline(value)}</td>' if numeric else f"<td>{_inline(value)}</td>"


def _link(label: str, path: str) -> str:
    """A link to a file beside the report (a relative path: nothing is loaded with the page)."""
    href = html.escape(urllib.parse.quote(path), quote=True)
    return f'<li><a href="{href}">{_inline(label)}</a></li>'


def _figure(figure: Figure, out: Path) -> str:
    path = out / figure.path
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f"<p>(The plot {html.escape(path.name)} is missing.)</p>"
    caption = _inline(figure.caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(figure.caption)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _inline(text: str) -> str:
    """Escape text, then turn ``code`` and **bold** marks into tags.

    Runs of slashes are written as character references so that nothing in the page (e.g. an
    ``sqlite:///`` address in a command) reads as a link to elsewhere.
    """
    escaped = html.escape(str(text), quote=False).replace("//", "&#47;&#47;")
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
