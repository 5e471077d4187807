"""`tessera backfill-sparse`: give a collection built before hybrid search its BM25 vectors.

The sparse vectors come from each point's payload text (what the dense model embedded), so the
embedding model is never loaded. The engine adds the sparse named vector to the existing
collection in place (Qdrant Edge `create_sparse_vector`, server `create_vector_name`): no rebuild,
no alias switch. Each batch sets the vectors, then marks the points with the config's signature;
a run killed half-way is resumed by the next one (marked points are skipped), and re-running a
finished backfill changes nothing. The collection records its sparse config only at the end, so
until then searches stay dense-only (correct) rather than hybrid over half the points.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tessera.core import telemetry
from tessera.core.errors import ConfigError, SparseConfigMismatchError, VectorStoreError
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.settings import Settings
from tessera.core.sparse import Bm25Encoder, SparseVec, sparse_identity, sparse_signature
from tessera.core.types import CollectionInfo, Match
from tessera.ingest.state import stale_states
from tessera.store import open_store, resolve

logger = logging.getLogger(__name__)
BATCH = 512


@telemetry.traced("backfill sparse")
def run_backfill_sparse(settings: Settings, collection: str | None = None,
                        batch_size: int = BATCH) -> dict[str, Any]:
    """Add BM25 vectors to every point of `collection` that lacks them; returns the counts."""
    identity = sparse_identity(settings.sparse)
    if identity is None:
        raise ConfigError("sparse.enabled", False, "backfill-sparse adds the vectors [sparse] "
                          "describes; set sparse.enabled = true first")
    if batch_size < 1:
        raise ConfigError("batch-size", batch_size, "use a batch size of 1 or more")
    run_id, started = new_run_id(), utcnow()
    clock = time.perf_counter()
    events = EventLog(settings.events_dir, run_id)
    store = open_store(settings)
    counts = {"points": 0, "already_done": 0, "updated": 0, "empty_text": 0}
    status, error, name = "completed", None, collection or settings.collection
    try:
        name = resolve(store, name)
        info = store.get_collection(name)
        if info is None:
            raise VectorStoreError(f"collection {name!r} does not exist; check --collection "
                                   "(or `collection` in tessera.toml)")
        if info.sparse is not None and info.sparse != identity:
            raise SparseConfigMismatchError(
                f"collection {name!r} already has BM25 vectors made with another [sparse] config; "
                "backfill-sparse only adds missing vectors. Restore the config, or build a new "
                "collection with this one and switch the alias (`tessera alias`)")
        _backfill(store, name, identity, batch_size, counts)
        if info.sparse is None:
            store.record_collection(CollectionInfo(**{**info.__dict__, "sparse": identity}))
        # The diff states recorded "no sparse vector" for every document: rebuilt from the index.
        stale_states(settings.home, store.real_name(name), "sparse vectors were backfilled")
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        store.close()
        events.add("sparse_backfill_runs", collection=name, status=status, error=error,
                   started_at=started, finished_at=utcnow(),
                   seconds=round(time.perf_counter() - clock, 3), **counts)
        events.flush()
    return {"run_id": run_id, "collection": name, **counts,
            "seconds": round(time.perf_counter() - clock, 3)}


def _backfill(store: Any, name: str, identity: dict[str, Any], batch_size: int,
              counts: dict[str, int]) -> None:
    """Every point without this config's signature: vector from its payload text, then the mark."""
    from tessera.core.sparse import config_from_identity

    store.add_sparse_vector(name, identity)
    bm25 = Bm25Encoder(config_from_identity(identity))
    signature = sparse_signature(identity)
    pending: list[tuple[str, str]] = []
    for pid, payload in store.scan(name, Match(), ["text", "sparse"]):
        counts["points"] += 1
        if payload.get("sparse") == signature:
            counts["already_done"] += 1
            continue
        pending.append((pid, str(payload.get("text") or "")))
        if len(pending) >= batch_size:
            _write(store, name, bm25, signature, pending, counts)
            pending = []
    _write(store, name, bm25, signature, pending, counts)


def _write(store: Any, name: str, bm25: Bm25Encoder, signature: str,
           pending: list[tuple[str, str]], counts: dict[str, int]) -> None:
    """Vectors first, then the signature: a kill in between leaves the batch to redo, not lost."""
    if not pending:
        return
    vectors: dict[str, SparseVec] = {}
    for pid, text in pending:
        vec = bm25.document(text)
        if vec:
            vectors[pid] = vec
        else:
            counts["empty_text"] += 1
    store.set_sparse(name, vectors)
    store.set_payload(name, [pid for pid, _ in pending], {"sparse": signature})
    counts["updated"] += len(pending)
