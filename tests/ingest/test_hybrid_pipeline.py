"""Hybrid retrieval through the pipeline, on real data (the first 300 SciFact documents):
a rare exact term dense search misses is found by hybrid, and the invariants hold with sparse
vectors (re-ingest writes none, edits and deletions leave nothing behind, old indexes work)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from flows.ingest import ingest_flow
from tessera.core import beir
from tessera.core.query import StoreQuery
from tessera.core.settings import Settings, load_settings
from tessera.core.sparse import Bm25Encoder, SparseConfig
from tessera.core.types import Match
from tessera.service.search import SearchQuery, run_search, search
from tessera.store import open_store
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, scifact_dir

pytestmark = pytest.mark.usefixtures("prefect_server")

DOCS = 300
# SciFact 654735 is the only one of these documents that names the gene PDCD4; MiniLM ranks it
# 278th of 300 for the query "PDCD4" (it has no idea of gene symbols).
RARE_TERM, RARE_DOC = "PDCD4", "654735"


@pytest.fixture(scope="module")
def scifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first 300 SciFact documents as a BEIR source, ingested once (hybrid, the default)."""
    root = tmp_path_factory.mktemp("hybrid")
    data = root / "scifact-300"
    data.mkdir()
    docs = [rec for _, rec in beir.read_corpus(scifact_dir())][:DOCS]
    (data / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    config = write_config(root / "tessera.toml", {"home": str(root / "home"), "collection": "sf"},
                          {}, [{"name": "sf", "kind": "beir", "path": str(data)}])
    first = ingest_flow(config=str(config))
    return {"config": config, "data": data, "docs": docs, "first": first}


def _ids(hits: list[dict[str, Any]]) -> list[str]:
    return [h["doc_id"] for h in hits]


def _sparse_hits(settings: Settings, text: str) -> list[str]:
    store = open_store(settings)
    try:
        return [h.payload["doc_id"] for h in store.query(settings.collection, StoreQuery(
            limit=20, sparse=Bm25Encoder(SparseConfig()).query(text)))]
    finally:
        store.close()


def test_rare_exact_term_dense_misses_is_found_by_hybrid(scifact: dict[str, Any],
                                                         minilm: Any) -> None:
    settings = load_settings(scifact["config"])
    assert scifact["first"]["sparse_written"] == scifact["first"]["points_upserted"] > DOCS
    dense = search(settings, RARE_TERM, k=10, backend=minilm, mode="dense")
    assert RARE_DOC not in _ids(dense)
    sparse = search(settings, RARE_TERM, k=10, backend=minilm, mode="sparse")
    assert _ids(sparse) == [RARE_DOC]  # the only document with the word
    hybrid = run_search(settings, SearchQuery(text=RARE_TERM, k=3), backend=minilm)
    assert hybrid["mode"] == "hybrid" and RARE_DOC in _ids(hybrid["results"])
    assert len(set(_ids(hybrid["results"]))) == 3  # documents, not chunks


def test_each_hybrid_hit_carries_what_each_side_scored_it(scifact: dict[str, Any],
                                                          minilm: Any) -> None:
    """The fused score only ranks; `scores` holds the dense similarity and BM25 of the very
    chunk shown, equal to what a one-sided search of that chunk scores."""
    settings = load_settings(scifact["config"])
    query = "vitamin D deficiency and bone fractures"
    fused = run_search(settings, SearchQuery(text=query, k=10, chunks=True), backend=minilm)
    alone = {mode: {(h["doc_id"], h["chunk_index"]): h["score"] for h in run_search(
        settings, SearchQuery(text=query, k=2000, mode=mode, chunks=True), backend=minilm)["results"]}
        for mode in ("dense", "sparse")}
    hits = fused["results"]
    assert [h["rank"] for h in hits] == list(range(1, 11))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in hits:
        key = (hit["doc_id"], hit["chunk_index"])
        assert hit["scores"]["dense"] == pytest.approx(alone["dense"][key], abs=1e-5)
        # A chunk without any query word is not among sparse hits: BM25 0.
        assert hit["scores"]["sparse"] == pytest.approx(alone["sparse"].get(key, 0.0), abs=1e-4)
    assert len({round(h["scores"]["dense"], 3) for h in hits}) > 1  # not one fused number
    dense_only = run_search(settings, SearchQuery(text=query, k=3, mode="dense"), backend=minilm)
    assert all(h["scores"] == {"dense": h["score"]} for h in dense_only["results"])


def test_reingest_embeds_nothing_and_writes_no_sparse_vector(scifact: dict[str, Any]) -> None:
    again = ingest_flow(config=str(scifact["config"]))
    assert (again["unchanged"], again["chunks_embedded"], again["sparse_written"]) == (DOCS, 0, 0)


def test_edited_and_removed_documents_leave_no_sparse_trace(scifact: dict[str, Any]) -> None:
    """An edit's stale chunks and a removed document's points are gone, dense and sparse alike."""
    settings = load_settings(scifact["config"])
    docs = [dict(d) for d in scifact["docs"]]
    assert RARE_TERM in _sparse_hits_text(docs, RARE_DOC)
    removed = docs[1]["_id"]
    removed_word = "immunoreceptor"
    assert removed_word in docs[1]["text"] and set(_sparse_hits(settings, removed_word)) == {removed}
    for d in docs:
        if d["_id"] == RARE_DOC:
            d["text"] = "A short rewritten abstract about apoptosis."
    docs = [d for d in docs if d["_id"] != removed]
    (scifact["data"] / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    run = ingest_flow(config=str(scifact["config"]))
    assert (run["indexed"], run["deleted"], run["chunks_embedded"]) == (1, 1, 1)
    assert _sparse_hits(settings, RARE_TERM) == []
    assert _sparse_hits(settings, removed_word) == []
    assert _sparse_hits(settings, "rewritten apoptosis")[0] == RARE_DOC
    store = open_store(settings)
    try:
        assert store.count("sf", Match(doc_ids=(RARE_DOC,))) == 1
        assert store.count("sf", Match(doc_ids=(removed,))) == 0
    finally:
        store.close()


def _sparse_hits_text(docs: list[dict[str, Any]], doc_id: str) -> str:
    return next(d["title"] + " " + d["text"] for d in docs if d["_id"] == doc_id)


def test_index_built_without_sparse_is_searched_dense_with_a_warning(
        tmp_path: Path, minilm: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A collection built before sparse vectors: searches run dense only, with one warning."""
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")},
                          {"sparse": {"enabled": False}},
                          [{"name": "docs", "path": str(EXAMPLES)}])
    assert ingest_flow(config=str(config))["sparse_written"] == 0
    hybrid_config = write_config(tmp_path / "hybrid.toml", {"home": str(tmp_path / "home")}, {},
                                 [{"name": "docs", "path": str(EXAMPLES)}])
    settings = load_settings(hybrid_config)
    with caplog.at_level(logging.WARNING):
        out = run_search(settings, SearchQuery(text="cold tomato soup", k=2, mode="hybrid"),
                         backend=minilm)
    assert out["mode"] == "dense" and "backfill-sparse" in (out["warning"] or "")
    assert sum("backfill-sparse" in r.message for r in caplog.records) == 1
    assert out["results"][0]["doc_id"] == "docs/recipes.jsonl#gazpacho"
    # Ingesting with hybrid on into it still works: dense only, nothing re-embedded.
    again = ingest_flow(config=str(hybrid_config))
    assert (again["unchanged"], again["chunks_embedded"], again["sparse_written"]) == (9, 0, 0)
