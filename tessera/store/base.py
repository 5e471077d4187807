"""The store protocol: what the pipeline needs from Qdrant, whichever way it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tessera.core.query import StoreQuery
from tessera.core.sparse import SparseVec
from tessera.core.types import CollectionInfo, Hit, Match, PointRecord

# Payload fields that get an index (DESIGN.md: doc_id, source, modality, expires_at).
KEYWORD_INDEXES = ("doc_id", "source", "modality")
INTEGER_INDEXES = ("expires_at",)
DIFF_FIELDS = ["doc_id", "chunk_index", "chunk_count", "content_hash", "model_id", "chunking",
               "sparse"]



@dataclass(frozen=True)
class HnswParams:
    """A collection's HNSW graph: links per point (0: no graph) and build-time candidates."""

    m: int = 16
    ef_construct: int = 100


class VectorStore(Protocol):
    """What the pipeline needs from Qdrant, whichever way it runs."""

    hnsw: HnswParams  # the graph of the collections it creates

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The collection's recorded model, or None if it does not exist."""
        ...

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the collection with payload indexes and its model recorded."""
        ...

    def list_collections(self) -> list[str]:
        """Names of the collections this store holds."""
        ...

    def unlisted(self) -> list[str]:
        """Collections the store holds that no valid name reaches (reported, never skipped)."""
        ...

    def scan(self, name: str, match: Match, fields: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(point id, payload subset) for every point matching `match`."""
        ...

    def upsert(self, name: str, points: list[PointRecord]) -> None:
        """Insert or replace points (idempotent: ids are deterministic)."""
        ...

    def set_payload(self, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        """Overwrite some payload keys of existing points (expiry refresh)."""
        ...

    def set_payload_where(self, name: str, match: Match, payload: dict[str, Any]) -> None:
        """Overwrite some payload keys of every point matching `match` (one filtered update)."""
        ...

    def delete(self, name: str, ids: list[str]) -> None:
        """Delete points by id."""
        ...

    def count(self, name: str, match: Match | None = None) -> int:
        """Exact number of points matching `match` (all when None)."""
        ...

    def count_expired(self, name: str, now: int) -> int:
        """Points whose expires_at is at or before `now`."""
        ...

    def delete_expired(self, name: str, now: int) -> None:
        """Delete, by a range filter, the points whose expires_at is at or before `now`."""
        ...

    def search(self, name: str, vector: np.ndarray, limit: int, match: Match | None = None) -> list[Hit]:
        """Nearest points to `vector` in the collection's named vector."""
        ...

    def query(self, name: str, query: StoreQuery) -> list[Hit]:
        """Chunk hits for a dense, sparse or hybrid (fused in the engine) query."""
        ...

    def query_batch(self, name: str, queries: list[StoreQuery]) -> list[list[Hit]]:
        """Chunk hits for each query, in one call where the engine batches."""
        ...

    def query_documents(self, name: str, query: StoreQuery) -> list[Hit]:
        """Up to `query.limit` distinct documents, each as its best chunk's hit."""
        ...

    def add_sparse_vector(self, name: str, identity: dict[str, Any]) -> None:
        """Give an existing collection the sparse vector (no-op if it has it); metadata unchanged."""
        ...

    def set_sparse(self, name: str, vectors: dict[str, SparseVec]) -> None:
        """Set the sparse vector of existing points (point id -> vector), leaving the rest."""
        ...

    def record_collection(self, info: CollectionInfo) -> None:
        """Rewrite what the collection records about itself (model, sparse config)."""
        ...

    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` (atomically replacing where it pointed before)."""
        ...

    def aliases(self) -> dict[str, str]:
        """alias -> collection."""
        ...

    def real_name(self, name: str) -> str:
        """The collection behind `name` when it is an alias, else `name`."""
        ...

    def drop_collection(self, name: str) -> None:
        """Delete a collection that no alias points at."""
        ...

    def adopt(self, plain: str, info: CollectionInfo) -> None:
        """Turn the plain collection `plain` into `info` (a versioned one) behind alias `plain`."""
        ...

    def index_params(self, name: str) -> HnswParams | None:
        """The HNSW graph the collection is built with (None: not known)."""
        ...

    def build_index(self, name: str, hnsw: HnswParams) -> dict[str, Any]:
        """Rebuild the collection's HNSW graph with `hnsw`; what was done."""
        ...

    def close(self) -> None:
        """Flush and release the store."""
        ...


def group_documents(run: Callable[[StoreQuery], list[Hit]], query: StoreQuery) -> list[Hit]:
    """Documents from chunk hits by over-fetching chunks and grouping them (engines without
    grouping, or a score over several chunks): fetch `limit x overfetch` chunks, doubling until
    `limit` documents are found or the engine returns fewer chunks than asked (the collection,
    or the filter, is exhausted). Each document is its best chunk, scored by `doc_scores`."""
    want = query.limit
    if query.fields is not None and "doc_id" not in query.fields:
        query = StoreQuery(**{**query.__dict__, "fields": (*query.fields, "doc_id")})
    fetch = want * max(query.overfetch, query.doc_chunks)
    while True:
        hits = run(StoreQuery(**{**query.__dict__, "limit": fetch}))
        docs = doc_scores(hits, query.doc_chunks)
        if len(docs) >= want or len(hits) < fetch:
            return docs[:want]
        fetch *= 2


def doc_scores(hits: list[Hit], chunks: int = 1) -> list[Hit]:
    """Each document's best chunk, in order of the document's score: its best chunk's
    (`chunks` 1, rank order kept), or the sum of its best `chunks` chunks' scores."""
    if chunks == 1:
        return first_per_document(hits)
    best: dict[str, Hit] = {}
    totals: dict[str, list[float]] = {}
    for hit in hits:
        doc = str(hit.payload.get("doc_id"))
        best.setdefault(doc, hit)
        totals.setdefault(doc, []).append(hit.score)
    scored = [Hit(id=h.id, score=sum(sorted(totals[d], reverse=True)[:chunks]), payload=h.payload)
              for d, h in best.items()]
    return sorted(scored, key=lambda h: h.score, reverse=True)


def first_per_document(hits: list[Hit]) -> list[Hit]:
    """The first (best-ranked) hit of each document, in rank order."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        doc = str(hit.payload.get("doc_id"))
        if doc not in seen:
            seen.add(doc)
            out.append(hit)
    return out
