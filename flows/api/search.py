"""Search: embed a text or image query with the collection's own model, return the best hits."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from flows.pipeline.store import VectorStore, open_store, resolve
from models import EmbeddingBackend, get_spec, make_backend
from tessera.errors import ConfigError, VectorStoreError
from tessera.settings import Settings
from tessera.types import Match

RESULT_FIELDS = ("doc_id", "chunk_index", "source", "title", "text", "modality", "uri")


def search(settings: Settings, query: str | None = None, image: bytes | None = None, k: int = 5,
           source: str | None = None, modality: str | None = None,
           collection: str | None = None, backend: EmbeddingBackend | None = None,
           store: VectorStore | None = None, where: Match | None = None,
           timings: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Top-k hits for a text or an image query, with the payload fields a caller needs.

    `store`: an open store to reuse (left open); `where`: more payload conditions (equals,
    ranges); `timings`: filled with embed_ms and engine_ms."""
    if (query is None) == (image is None):
        raise ConfigError("query", query, "give either a text query or --image PATH, not both")
    own = store is None
    store = open_store(settings) if store is None else store
    try:
        name = resolve(store, collection or settings.collection)
        info = store.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; run `tessera ingest` first")
        # Queries are embedded by the model the collection was built with.
        if backend is None or backend.spec.id != info.model_id:
            backend = make_backend(settings, get_spec(settings, info.model_name))
        start = time.perf_counter()
        vector = (backend.embed_images([image])[0] if image is not None
                  else backend.embed_queries([query or ""])[0])
        embedded = time.perf_counter()
        hits = store.search(name, vector, k, replace(where or Match(), source=source,
                                                     modality=modality))
        if timings is not None:
            timings.update(embed_ms=(embedded - start) * 1000,
                           engine_ms=(time.perf_counter() - embedded) * 1000)
    finally:
        if own:
            store.close()
    return [{**{f: h.payload.get(f) for f in RESULT_FIELDS}, "score": round(h.score, 6)} for h in hits]
