"""Parsers for the text formats a directory source reads: each returns plain records."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tessera.core.errors import RecordError

Record = dict[str, Any]


def decode(raw: bytes, encoding: str, name: str) -> str:
    """Bytes to text, or a RecordError that says where the bad byte is and what to do."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise RecordError(
            f"{name} is not valid {encoding}: byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
            f"re-save it as {encoding} or set options.encoding for this source",
            expectation="valid_encoding",
        ) from None
    return text.removeprefix("\ufeff")


class _HTMLText(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "head"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP and self._skip:
            self._skip -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text and <title> of an HTML page (scripts and styles dropped)."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line), parser.title.strip()


def markdown_title(text: str) -> str:
    """The first '# heading' of a markdown file, or ''."""
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def first_line_title(text: str, limit: int = 80) -> str:
    """A title for a file that names none: its first non-blank line, cut at a word before
    `limit` characters (with "…"), or ''."""
    line = next((" ".join(ln.split()) for ln in text.splitlines() if ln.strip()), "")
    line = line.lstrip("#").strip()
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,;:.-") + "…"


def _too_deep(where: str) -> RecordError:
    return RecordError(f"{where}: the JSON is nested too deeply to read (over ~1,000 levels); "
                       "flatten the record", expectation="valid_json")


def parse_json(text: str, name: str) -> list[Record]:
    """A JSON file holding one object or a list of objects."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}",
                          expectation="valid_json") from None
    except RecursionError:
        raise _too_deep(name) from None
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, dict) for v in items):
        raise RecordError(f"{name} must hold a JSON object or a list of objects",
                          expectation="json_object")
    return items


def read_limited(path: Path, limit: int, name: str) -> bytes:
    """Read a file, refusing (not crashing on) one larger than the configured limit."""
    size = path.stat().st_size
    if size > limit:
        raise RecordError(
            f"{name} is {size:,} bytes, over this source's limit of {limit:,} "
            "(options.max_file_bytes); split the file or raise the limit",
            expectation="file_size_within_limit",
        )
    return path.read_bytes()
