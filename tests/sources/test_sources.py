"""Directory and BEIR sources: every format, stable ids, content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tessera.core.settings import SourceConfig
from tessera.core.types import Document, Quarantined
from tessera.sources import make_source
from tests.support.paths import EXAMPLES


def _load(path: Path, **kw: object) -> list[Document | Quarantined]:
    src = make_source(SourceConfig(name="s", path=path, **kw))  # type: ignore[arg-type]
    return list(src.load(src.discover()))


def test_sample_corpus_reads_every_format() -> None:
    docs = {d.doc_id: d for d in _load(EXAMPLES) if isinstance(d, Document)}
    assert set(docs) == {
        "s/photosynthesis.md", "s/volcanoes.html", "s/tides.txt", "s/vector-search.md",
        "s/recipes.jsonl#carbonara", "s/recipes.jsonl#sourdough", "s/recipes.jsonl#gazpacho",
        "s/cities.csv#tokyo", "s/cities.csv#reykjavik",
    }
    html = docs["s/volcanoes.html"]
    assert html.title == "How volcanoes erupt"
    assert "console.log" not in html.text and "font-family" not in html.text
    assert "magma chamber" in html.text
    assert docs["s/photosynthesis.md"].title == "Photosynthesis"
    assert docs["s/recipes.jsonl#gazpacho"].title == "Gazpacho"


def test_ids_and_hashes_are_stable_and_hash_follows_content(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello world")
    first = _load(tmp_path)[0]
    again = _load(tmp_path)[0]
    assert isinstance(first, Document) and isinstance(again, Document)
    assert (first.doc_id, first.content_hash) == (again.doc_id, again.content_hash)
    (tmp_path / "a.txt").write_text("hello world!")
    changed = _load(tmp_path)[0]
    assert isinstance(changed, Document)
    assert changed.doc_id == first.doc_id and changed.content_hash != first.content_hash


def test_parquet_and_json_with_configured_fields(tmp_path: Path) -> None:
    pd.DataFrame({"key": ["k1", "k2"], "body": ["alpha text", "beta text"],
                  "head": ["A", "B"]}).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "one.json").write_text(json.dumps({"key": "j1", "body": "gamma", "head": "G"}))
    out = _load(tmp_path, options={"id_field": "key", "text_field": "body", "title_field": "head"})
    docs = {d.doc_id: d for d in out if isinstance(d, Document)}
    assert set(docs) == {"s/t.parquet#k1", "s/t.parquet#k2", "s/one.json#j1"}
    assert docs["s/t.parquet#k2"].title == "B" and docs["s/one.json#j1"].text == "gamma"


def test_beir_corpus_uses_corpus_ids_and_title_plus_text(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "42", "title": "T", "text": "body", "metadata": {}}) + "\n")
    (doc,) = _load(tmp_path, kind="beir")
    assert isinstance(doc, Document)
    assert doc.doc_id == "42" and doc.text == "T body"


def test_a_file_without_a_title_is_titled_by_its_first_line(tmp_path: Path) -> None:
    """A heading or <title> wins; else the first non-blank line, cut at a word; else the stem."""
    (tmp_path / "9555784.txt").write_text("\n  Vitamin D and fractures in older adults \nBody.\n")
    (tmp_path / "plain.md").write_text("No heading here, just prose.\n\n# Later heading\n")
    (tmp_path / "long.txt").write_text("word " * 40)
    (tmp_path / "page.html").write_text("<html><body><p>First paragraph of a page</p></body></html>")
    (tmp_path / "empty-ish.txt").write_text("   \n")
    docs = {d.doc_id: d.title for d in _load(tmp_path) if isinstance(d, Document)}
    assert docs["s/9555784.txt"] == "Vitamin D and fractures in older adults"
    assert docs["s/plain.md"] == "Later heading"  # a markdown heading anywhere is the title
    assert docs["s/long.txt"].endswith("…") and len(docs["s/long.txt"]) <= 81
    assert docs["s/page.html"] == "First paragraph of a page"
    assert docs.get("s/empty-ish.txt", "empty-ish") == "empty-ish"
