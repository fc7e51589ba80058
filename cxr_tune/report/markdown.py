"""The report document as Markdown (GitHub flavour); figures link to ``plots/*.png``."""

from __future__ import annotations

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


def render(doc: Document) -> str:
    """Markdown text of ``doc``: a title, a table of contents, then every section."""
    parts = [f"# {doc.title}", _contents(doc)]
    parts += [_section(section) for section in doc.sections]
    return "\n\n".join(p for p in parts if p) + "\n"


def _contents(doc: Document) -> str:
    lines = [f"- [{s.title}](#{s.anchor})" for s in doc.sections if s.level == 2]
    return "\n".join(lines)


def _section(section: Section) -> str:
    parts = ["#" * section.level + " " + section.title]
    parts += [_block(block) for block in section.blocks]
    return "\n\n".join(parts)


def _block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return _inline(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_inline(item)}" for item in block.items)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figure):
        return f"![{_alt(block.caption)}]({block.path})\n\n*{_inline(block.caption)}*"
    if isinstance(block, Links):
        # A link, not an image (``![...]``): the file is not shown in the report.
        return "\n".join(f"- [{_alt(label)}]({_href(path)})" for label, path in block.items)
    raise TypeError(f"Unknown block {type(block).__name__}")


def _table(table: Table) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in table.headers) + " |",
        "| " + " | ".join("---" for _ in table.headers) + " |",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{_inline(table.caption)}*"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    # A pipe or a line break would end the cell early.
    return _inline(text).replace("|", "\\|").replace("\n", " ")


def _alt(text: str) -> str:
    # A bracket in an image's alt text (an interval "[0.05, 0.20]") would end it early.
    return _inline(text).replace("[", "\\[").replace("]", "\\]")


def _href(path: str) -> str:
    # Spaces and parentheses would end a Markdown link target early.
    return path.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _inline(text: str) -> str:
    return " ".join(str(text).split("\n"))
