"""The pure parts of an ingest: what the index holds, what changed, and which points to write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tessera.core.sparse import SparseVec
from tessera.core.types import Chunk, Document, PointRecord, point_id

# Points of sources with no TTL still carry an expiry, far enough out never to be pruned.
NEVER_EXPIRES = 253_402_300_799  # 9999-12-31T23:59:59Z
# An expiry is rounded up to a whole step of this share of the TTL (1%: 7.2 h of 30 days, 36 s of
# an hour). A point then lives at least its TTL after it was last seen, and at most 1% longer;
# and a re-run inside the same step finds every expiry already right and rewrites none
# (rewriting the payload of every point was 41% of an unchanged 100,000-document re-run).
EXPIRY_STEP_SHARE = 100


@dataclass
class Existing:
    """What the collection holds for one document."""

    hashes: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    chunkings: set[str] = field(default_factory=set)
    sparses: set[str] = field(default_factory=set)  # sparse signatures ("none": no sparse vector)
    chunk_counts: set[int] = field(default_factory=set)
    ids_by_index: dict[int, str] = field(default_factory=dict)
    expiries: set[int] = field(default_factory=set)  # expires_at of its points, where known

    def already_expires_at(self, expires_at: int) -> bool:
        """True when every point of the document already expires at `expires_at` (a refresh
        would write nothing new); False when any differs or is not known."""
        return self.expiries == {expires_at}

    @property
    def ids(self) -> list[str]:
        """All point ids of the document."""
        return list(self.ids_by_index.values())


def stale_ids(existing: Existing | None, new_ids: set[str]) -> list[str]:
    """Points of the document that the new version does not overwrite (to delete after upsert)."""
    if existing is None:
        return []
    return [pid for pid in existing.ids if pid not in new_ids]


def build_points(collection: str, doc: Document, chunks: list[Chunk], vectors: np.ndarray,
                 model_id: str, now: int, expires_at: int, chunking: str,
                 sparse: list[SparseVec] | None = None,
                 sparse_signature: str = "none") -> list[PointRecord]:
    """Points for a document's chunks with the payload DESIGN.md fixes (and, when the
    collection has them, each chunk's sparse vector and the signature of its config)."""
    base: dict[str, Any] = {
        "doc_id": doc.doc_id,
        "source": doc.source,
        "uri": doc.uri,
        "modality": doc.modality,
        "content_hash": doc.content_hash,
        "model_id": model_id,
        "chunking": chunking,
        "title": doc.title,
        "ingested_at": now,
        "expires_at": expires_at,
    }
    if sparse is not None:
        base["sparse"] = sparse_signature
    meta = {k: v for k, v in doc.metadata.items() if k not in base and v is not None}
    return [
        PointRecord(
            id=point_id(collection, doc.doc_id, chunk.index),
            vector=vectors[i],
            payload={**meta, **base, "chunk_index": chunk.index, "chunk_count": chunk.count,
                     "text": chunk.text},
            sparse=sparse[i] if sparse is not None else None,
        )
        for i, chunk in enumerate(chunks)
    ]


def expiry(now: int, ttl_seconds: int | None) -> int:
    """Epoch seconds at which a point seen now expires: `now + ttl`, rounded up to a whole step
    of 1/EXPIRY_STEP_SHARE of the TTL (never earlier than the TTL asks)."""
    if ttl_seconds is None:
        return NEVER_EXPIRES
    step = max(1, ttl_seconds // EXPIRY_STEP_SHARE)
    return -(-(now + ttl_seconds) // step) * step


def stale_expiry(expires_at: int) -> tuple[tuple[str, float | None, float | None], ...]:
    """Ranges (for Match.ranges, one at a time) of the points whose expiry is not `expires_at`:
    earlier (seen again, or a longer TTL) or later (a shorter TTL now applies)."""
    return (("expires_at", None, expires_at - 1), ("expires_at", expires_at + 1, None))


@dataclass
class RunCounts:
    """A run's document outcomes and work done; `seen = indexed + unchanged + quarantined`."""

    seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    chunks_embedded: int = 0
    points_upserted: int = 0
    sparse_written: int = 0  # points written with a sparse vector
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        """Accumulate time spent in a stage."""
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
