"""`tessera optimize`: rebuild a collection's HNSW graph with the configured parameters.

A new collection is built with `store.hnsw_m` and `store.hnsw_ef_construct` as its segments are
sealed. A collection made before the graph was on by default (m = 0: every search scans), or
before those settings changed, keeps its graph until this job rebuilds it. On the embedded store
it holds the shard's writer lock for the rebuild (an ingest waits; API readers keep searching
their snapshot and take the rebuilt one when it is done); a Qdrant server rebuilds in the
background.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tessera.core import telemetry
from tessera.core.errors import VectorStoreError
from tessera.core.settings import Settings
from tessera.store import HnswParams, open_store, resolve


@telemetry.traced("optimize")
def run_optimize(settings: Settings, collection: str | None = None) -> dict[str, Any]:
    """Rebuild `collection`'s (default: the configured one's) graph; what was done."""
    wanted = HnswParams(settings.store.hnsw_m, settings.store.hnsw_ef_construct)
    store = open_store(settings)
    try:
        name = resolve(store, collection or settings.collection)
        if store.get_collection(name) is None:
            raise VectorStoreError(f"collection {name!r} does not exist; check --collection "
                                   "(or `collection` in tessera.toml)")
        before = store.index_params(name)
        result = store.build_index(name, wanted)
    finally:
        store.close()
    return {**result, "before": dataclasses.asdict(before) if before else None}
