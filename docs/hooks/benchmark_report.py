"""mkdocs hook: the performance page carries `benchmarks/REPORT.md` itself, read at every build.

The figures live in one place (the report `make bench` writes, each section with its date,
machine and command); the page holding `<!-- benchmark-report -->` shows them with headings one
level down and the report's images named by their path in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MARKER = "<!-- benchmark-report -->"
REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "REPORT.md"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace the marker with the report."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(REPORT.read_text(encoding="utf-8")))


def render(report: str) -> str:
    """The report, its title dropped, headings one level down, images as their repo paths."""
    lines = report.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join("#" + line if line.startswith("#") else line for line in lines)
    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r"(figure: \1, `benchmarks/\2`)", text)
