"""The store protocol: what the pipeline needs from Qdrant, whichever way it runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from tessera.types import CollectionInfo, Hit, Match, PointRecord

# Payload fields that get an index (DESIGN.md: doc_id, source, modality, expires_at).
KEYWORD_INDEXES = ("doc_id", "source", "modality")
INTEGER_INDEXES = ("expires_at",)
DIFF_FIELDS = ["doc_id", "chunk_index", "chunk_count", "content_hash", "model_id", "chunking"]


class VectorStore(Protocol):
    """What the pipeline needs from Qdrant, whichever way it runs."""

    def get_collection(self, name: str) -> CollectionInfo | None:
        """The collection's recorded model, or None if it does not exist."""
        ...

    def create_collection(self, info: CollectionInfo) -> None:
        """Create the collection with payload indexes and its model recorded."""
        ...

    def list_collections(self) -> list[str]:
        """Names of the collections this store holds."""
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

    def search_batch(self, name: str, vectors: np.ndarray, limit: int,
                     fields: list[str] | None = None, exact: bool = False) -> list[list[Hit]]:
        """Nearest points for each row of `vectors`, in one call; `exact` skips the HNSW index."""
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

    def close(self) -> None:
        """Flush and release the store."""
        ...
