"""Search: one code path for `tessera search`, the HTTP API and the MCP server.

A text query runs in one of three modes: `dense` (embedded by the collection's own model),
`sparse` (BM25, with the collection's recorded config) or `hybrid` (both, fused in the engine).
Results are documents, each with its best chunk, unless `chunks` asks for raw chunk hits. An image
query is dense only (an image has no words). A collection built before sparse vectors existed is
searched dense only, with a one-line warning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

import numpy as np

from models import EmbeddingBackend, get_spec, make_backend
from tessera.core import telemetry
from tessera.core.errors import UsageError, VectorStoreError
from tessera.core.query import MODES, StoreQuery
from tessera.core.settings import Settings
from tessera.core.sparse import Bm25Encoder, SparseVec, config_from_identity, sparse_signature
from tessera.core.tuned import search_settings
from tessera.core.types import CollectionInfo, Hit, Match
from tessera.store import VectorStore, open_store, resolve

logger = logging.getLogger(__name__)
RESULT_FIELDS = ("doc_id", "chunk_index", "source", "title", "text", "modality", "uri")
_ENCODERS: dict[str, Bm25Encoder] = {}


@dataclass(frozen=True)
class SearchQuery:
    """One search request, whatever front end it came from."""

    text: str | None = None
    image: bytes | None = None
    k: int = 5
    mode: str | None = None  # dense | sparse | hybrid; None: search.mode from config
    chunks: bool = False  # raw chunk hits instead of one (best-chunk) hit per document
    source: str | None = None
    modality: str | None = None
    collection: str | None = None


def check_query(settings: Settings, q: SearchQuery) -> str:
    """Refuse a malformed request before any work; the mode asked for (or the default)."""
    # The CLI, the API and MCP refuse these first in their own words; this guards library calls.
    if (q.text is None) == (q.image is None):
        raise UsageError(f"give a text query or an image, not "
                         f"{'both' if q.text is not None else 'neither'}")
    if q.k < 1:
        raise UsageError(f"k={q.k}: ask for at least one result")
    mode = q.mode or settings.search.mode
    if mode not in MODES:
        raise UsageError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def effective_mode(info: CollectionInfo, asked: str, image: bool) -> tuple[str, str | None]:
    """The mode that can run on this collection, and a warning when it is not the one asked."""
    if asked == "dense":
        return asked, None
    if image:
        return "dense", None  # an image query has no words: dense is the only mode for it
    if info.sparse is None:
        return "dense", (f"collection {info.name!r} has no sparse vectors (built before hybrid "
                         f"search): searching it dense only; run `tessera backfill-sparse "
                         f"--collection {info.name}` to enable {asked} search")
    return asked, None


def image_refusal(info: CollectionInfo) -> str | None:
    """Why an image cannot query this collection (its model embeds text only, on any runtime),
    or None: the one wording the CLI, the HTTP API and the MCP server give."""
    if "image" in info.modalities:
        return None
    return (f"collection {info.name!r} holds {info.model_name}, which embeds text only; search "
            "it with a text query")


def encoder(identity: dict[str, Any]) -> Bm25Encoder:
    """The BM25 encoder of a recorded sparse config (cached: cheap, but queries are many)."""
    key = sparse_signature(identity)
    if key not in _ENCODERS:
        _ENCODERS[key] = Bm25Encoder(config_from_identity(identity))
    return _ENCODERS[key]


def public_uri(settings: Settings, payload: dict[str, Any]) -> str | None:
    """The uri a reader is shown: `source:path`, the file relative to its source's root with a
    record's `#line=N` kept, so no answer tells where the server keeps its files; the stored
    absolute uri only with api.absolute_uris. The payload itself is never changed."""
    uri = payload.get("uri")
    if not uri or settings.api.absolute_uris:
        return uri
    uri, rel = str(uri), payload.get("path")
    at = uri.rfind(f"/{rel}") if rel else -1
    if at >= 0:  # directory and image sources: `path` is the file under the root
        shown = uri[at + 1:]
    else:  # a BEIR corpus (`corpus.jsonl#id`): the file's name and the record
        file, mark, record = uri.partition("#")
        shown = PurePath(file).name + mark + record
    return f"{payload.get('source')}:{shown}"


def run_search(settings: Settings, q: SearchQuery, backend: EmbeddingBackend | None = None,
               store: VectorStore | None = None, *, where: Match | None = None,
               timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Run one search. Returns {"results": [...], "mode": the mode that ran, "grouped": bool,
    "collection": name, "warning": str | None}. A `store` passed in stays open (a server
    holds one); otherwise one is opened and closed here. `where`: more payload conditions
    (equals, ranges); `timings`: filled with embed_ms (dense and sparse encoding) and
    engine_ms. Traced as `search` (or as the caller's request or command span, when there is one),
with the embedding and the engine query under it."""
    asked = check_query(settings, q)
    telemetry.setup(settings.telemetry, role="worker")  # a no-op where the process set it up
    with telemetry.step("search", k=q.k, chunks=q.chunks, image=q.image is not None,
                        query=q.text if settings.api.log_queries else None):
        return _run_search(settings, q, asked, backend, store, where, timings)


def _run_search(settings: Settings, q: SearchQuery, asked: str,
                backend: EmbeddingBackend | None, store: VectorStore | None,
                where: Match | None, timings: dict[str, float] | None) -> dict[str, Any]:
    own = store is None
    store = store or open_store(settings)
    try:
        name = resolve(store, q.collection or settings.collection)
        info = store.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        refused = image_refusal(info) if q.image is not None else None
        if refused:  # before the model loads
            raise UsageError(refused)
        mode, warning = effective_mode(info, asked, q.image is not None)
        telemetry.set_attributes(collection=name, mode=mode)
        if warning:
            logger.warning("%s", warning)
        started = time.perf_counter()
        dense, sparse = encode_query(settings, info, q, mode, backend)
        cfg = search_settings(settings, name)  # `tessera tune`'s for this collection, or [search]
        request = StoreQuery(limit=q.k, dense=dense, sparse=sparse,
                             match=replace(where or Match(), source=q.source,
                                           modality=q.modality),
                             fusion=cfg.fusion, rrf_k=cfg.rrf_k, prefetch=cfg.prefetch,
                             dense_prefetch=cfg.dense_prefetch,
                             sparse_prefetch=cfg.sparse_prefetch,
                             overfetch=cfg.group_overfetch, hnsw_ef=cfg.hnsw_ef,
                             doc_chunks=cfg.doc_chunks)
        encoded = time.perf_counter()
        with telemetry.span("engine query", collection=name, mode=mode, k=q.k,
                            prefetch=request.depth, hnsw_ef=request.hnsw_ef, chunks=q.chunks):
            hits = (store.query(name, request) if q.chunks
                    else store.query_documents(name, request))
            telemetry.set_attributes(hits=len(hits))
            sides = side_scores(store, name, request, hits)
        if timings is not None:
            timings.update(embed_ms=(encoded - started) * 1000,
                           engine_ms=(time.perf_counter() - encoded) * 1000)
    finally:
        if own:
            store.close()
    results = [{**{f: h.payload.get(f) for f in RESULT_FIELDS},
                "uri": public_uri(settings, h.payload), "rank": rank,
                "score": round(h.score, 6), "scores": sides.get(h.id, {})}
               for rank, h in enumerate(hits, 1)]
    return {"results": results, "mode": mode, "grouped": not q.chunks, "collection": name,
            "warning": warning}


def side_scores(store: VectorStore, name: str, request: StoreQuery, hits: list[Hit]
                ) -> dict[str, dict[str, float]]:
    """Each hit's score on each side its mode computed: `dense` (the model's similarity) and
    `sparse` (BM25). A one-sided search's score is that side's; a fused (hybrid) score is only
    a rank-based sum, so each side is asked again for just these points, in one batch."""
    if request.mode != "hybrid":
        return {h.id: {request.mode: round(h.score, 6)} for h in hits}
    if not hits:
        return {}
    only = replace(request.match or Match(), point_ids=tuple(h.id for h in hits))
    # k points by id: the engine scores them all (a filter that small is searched without
    # the graph), so no search parameters.
    sides = {"dense": replace(request, sparse=None, match=only, limit=len(hits), fields=(),
                              exact=False, hnsw_ef=None),
             "sparse": replace(request, dense=None, match=only, limit=len(hits), fields=())}
    answers = store.query_batch(name, list(sides.values()))
    # A point a side does not return scored nothing there (BM25: no query word in it).
    out: dict[str, dict[str, float]] = {h.id: dict.fromkeys(sides, 0.0) for h in hits}
    for side, answer in zip(sides, answers, strict=True):
        for hit in answer:
            if hit.id in out:
                out[hit.id][side] = round(hit.score, 6)
    return out


def readable_score(hit: dict[str, Any]) -> str:
    """What a person reads for one result: the dense similarity and the BM25 score where the
    search computed them (`dense 0.783 · bm25 5.90`); the fused hybrid score ranks but means
    nothing on its own."""
    scores = hit.get("scores") or {}
    parts = ([f"dense {scores['dense']:.3f}"] if "dense" in scores else []) + (
        [f"bm25 {scores['sparse']:.2f}"] if "sparse" in scores else [])
    return " · ".join(parts) or f"score {hit.get('score', 0):.3f}"


def encode_query(settings: Settings, info: CollectionInfo, q: SearchQuery, mode: str,
            backend: EmbeddingBackend | None) -> tuple[np.ndarray | None, SparseVec | None]:
    """The query's dense vector and its sparse (BM25) one, each None where `mode` has no use
    for it."""
    dense = sparse = None
    if mode in ("dense", "hybrid"):
        # Queries are embedded by the model the collection was built with.
        if backend is None or backend.spec.id != info.model_id:
            backend = make_backend(settings, get_spec(settings, info.model_name))
        with telemetry.span("embed query", model=backend.spec.name,
                            backend=backend.stats.backend, batch_size=1):
            dense = (backend.embed_images([q.image])[0] if q.image is not None
                     else backend.embed_queries([q.text or ""])[0])
    if mode in ("sparse", "hybrid"):
        assert info.sparse is not None
        sparse = encoder(info.sparse).query(q.text or "")  # ~50 µs: no span of its own
    return dense, sparse


def search(settings: Settings, query: str | None = None, image: bytes | None = None, k: int = 5,
           source: str | None = None, modality: str | None = None,
           collection: str | None = None, backend: EmbeddingBackend | None = None, *,
           mode: str | None = None, chunks: bool = False) -> list[dict[str, Any]]:
    """Top-k results for a text or an image query, with the payload fields a caller needs:
    k documents (best chunk each) by default, or k raw chunk hits with `chunks=True`."""
    q = SearchQuery(text=query, image=image, k=k, mode=mode, chunks=chunks, source=source,
                    modality=modality, collection=collection)
    results: list[dict[str, Any]] = run_search(settings, q, backend)["results"]
    return results
