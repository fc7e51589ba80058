"""Assertions shared by the report tests: valid PNGs, a page that loads nothing from outside."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from cxr_tune.constants import SALIENCY_DIR
from cxr_tune.report.write import PLOT_PREFIXES


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]


def assert_self_contained(page: str) -> int:
    """The page references nothing outside itself but the saliency overlays, linked (never
    loaded with the page) by a relative path; returns how many images it embeds."""
    # Base64 may hold "//"; an embedded image is no reference, so it is left out of the scan.
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)
    for needle in ("http:", "https:", "//", "url(", "@import"):
        assert needle not in text, f"the page contains {needle!r}"
    collector = _Collector()
    collector.feed(page)
    assert not {"script", "link", "iframe", "object", "embed"} & set(collector.tags)
    images = 0
    for tag, name, value in collector.attributes:
        if name == "src":
            assert value.startswith("data:image/png;base64,"), f"<{tag} src={value[:40]}>"
            images += 1
        if name == "href":
            assert value.startswith("#") or is_overlay_link(value), f"<{tag} href={value}>"
    assert images == len(re.findall(r"<img ", page))
    return images


def is_overlay_link(href: str) -> bool:
    """A relative link to a saliency overlay PNG in an experiment folder."""
    relative = ":" not in href and not href.startswith("/")
    return relative and f"/{SALIENCY_DIR}/" in f"/{href}" and href.endswith(".png")


def assert_valid_pngs(folder: Path) -> list[Path]:
    """Every file under ``folder`` is a PNG the report draws (no copied image) and opens."""
    paths = sorted(folder.iterdir())
    for path in paths:
        assert path.suffix == ".png" and path.name.startswith(PLOT_PREFIXES), path.name
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG"
    return paths


def markdown_images(text: str) -> list[str]:
    """The image paths a Markdown report links."""
    # Alt text may hold escaped brackets ("\\[0.05, 0.20\\]").
    return re.findall(r"!\[(?:\\.|[^\]\\])*\]\(([^)]+)\)", text)
