"""Status and quarantine listings: what the index holds, the last runs, what was refused and why."""

from __future__ import annotations

from typing import Any

from flows.pipeline.store import open_store
from tessera.events import read_events
from tessera.settings import Settings


def status(settings: Settings, last: int = 5) -> dict[str, Any]:
    """Each collection's model, dimension and size, and the most recent runs."""
    store = open_store(settings)
    collections = []
    try:
        for name in store.list_collections():
            info = store.get_collection(name)
            assert info is not None
            collections.append({"name": name, "model": info.model_id, "dimension": info.dimension,
                                "distance": info.distance, "points": store.count(name),
                                "sparse": info.sparse is not None})
        aliases = store.aliases()
    finally:
        store.close()
    runs = sorted(read_events(settings.events_dir, "ingest_runs"), key=lambda r: r["started_at"], reverse=True)
    keep = ("run_id", "status", "started_at", "seconds", "seen", "indexed", "unchanged",
            "quarantined", "deleted", "chunks_embedded")
    return {"home": str(settings.home), "collections": collections, "aliases": aliases,
            "last_runs": [{k: r.get(k) for k in keep} for r in runs[:last]]}


def quarantine_rows(settings: Settings, run_id: str | None = None) -> list[dict[str, Any]]:
    """Quarantined records, newest first, optionally for one run."""
    rows = read_events(settings.events_dir, "quarantine")
    if run_id:
        rows = [r for r in rows if r["run_id"] == run_id]
    return sorted(rows, key=lambda r: (r["recorded_at"], r["doc_id"]), reverse=True)
