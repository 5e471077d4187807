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
