"""Markdown and HTML renderers on a small hand-made document."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cxr_tune.report import html, markdown
from cxr_tune.report.document import Bullets, Document, Figure, Paragraph, Section, make_table
from tests.report.checks import assert_self_contained


def _document(tmp_path: Path) -> Document:
    (tmp_path / "plots").mkdir()
    Image.new("RGB", (4, 4), "white").save(tmp_path / "plots" / "efficiency.png")
    return Document(
        "demo <run>",
        [
            Section("Summary", [Paragraph("**Bold** and `code` with <tags> & sqlite:///x.db")]),
            Section("Failed, diverged trials", [Bullets(("a | b", "second"))], level=2),
            Section(
                "Numbers",
                [
                    make_table(["name", "value"], [["x|y", 0.5], ["nan", float("nan")]], "cap"),
                    Figure("plots/efficiency.png", "a plot"),
                ],
                level=3,
            ),
        ],
    )


def test_markdown_escapes_table_pipes_and_links_figures(tmp_path: Path) -> None:
    text = markdown.render(_document(tmp_path))
    assert "| x\\|y | 0.5000 |" in text and "| nan | — |" in text
    assert "![a plot](plots/efficiency.png)" in text
    assert "- [Failed, diverged trials](#failed-diverged-trials)" in text


def test_html_escapes_text_and_embeds_figures(tmp_path: Path) -> None:
    page = html.render(_document(tmp_path), tmp_path)
    assert assert_self_contained(page) == 1
    assert "<strong>Bold</strong>" in page and "<code>code</code>" in page
    assert "&lt;tags&gt; &amp;" in page and "<title>demo &lt;run&gt;" in page
    assert 'id="failed-diverged-trials"' in page and 'href="#failed-diverged-trials"' in page
    assert '<td class="num">0.5000</td>' in page


def test_html_notes_a_missing_figure(tmp_path: Path) -> None:
    doc = _document(tmp_path)
    (tmp_path / "plots" / "efficiency.png").unlink()
    assert "(The plot efficiency.png is missing.)" in html.render(doc, tmp_path)
