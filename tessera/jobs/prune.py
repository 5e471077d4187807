"""TTL pruning: delete, by a range filter on `expires_at`, the points whose expiry has passed.

A point expires at or before `now`; one whose `expires_at` is later is never touched (the filter
is `expires_at <= now`, evaluated by Qdrant on the integer payload index). Pruning is idempotent:
a second run finds nothing expired and deletes nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tessera.core import telemetry
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.settings import Settings
from tessera.core.steps import PlainSteps, Steps
from tessera.core.types import Match
from tessera.ingest.state import expire_states
from tessera.jobs.migration.job import prune_previous
from tessera.store import VectorStore, open_store
from tessera.store.collections import UNLISTED_FIX

logger = logging.getLogger(__name__)


def prune_collection(store: VectorStore, collection: str, now: int, dry_run: bool,
                     home: Path | None = None) -> dict[str, Any]:
    """Count the collection's expired points and (unless a dry run) delete them by range filter;
    with `home`, the diff states of the collection's sources forget what was deleted."""
    start = time.perf_counter()
    expired = store.count_expired(collection, now)
    deleted = 0
    if expired and not dry_run:
        store.delete_expired(collection, now)
        # Counted, not assumed: what is still expired at the same `now` was not deleted.
        deleted = expired - store.count_expired(collection, now)
        if home is not None:
            expire_states(home, store, collection, now)
    return {"collection": collection, "expired": expired, "deleted": deleted,
            "seconds": time.perf_counter() - start}


@telemetry.traced("prune run")
def run_prune(settings: Settings, steps: Steps | None = None, dry_run: bool = False,
              now: int | None = None) -> dict[str, Any]:
    """Prune every collection at `now` (default: the current time); returns the run summary."""
    steps = steps or PlainSteps()
    now = int(time.time()) if now is None else now
    events = EventLog(settings.events_dir, new_run_id())
    started, clock = utcnow(), time.perf_counter()
    store = open_store(settings)
    results = []
    try:
        for name in steps.run("list-collections", store.list_collections, io=True):
            result = steps.run(f"prune-{name}", prune_collection, store, name, now, dry_run,
                               settings.home, io=True)
            results.append(result)
            events.add("prune_runs", collection=name, expired=result["expired"],
                       deleted=result["deleted"], dry_run=dry_run, seconds=result["seconds"],
                       started_at=started)
            if result["deleted"]:
                _snapshot(settings, store, events, name)
        # Collections a migration replaced, once migrate.keep_previous has passed.
        dropped = steps.run("prune-previous", prune_previous, settings, store, now, dry_run,
                            io=True)
        unlisted = store.unlisted()
    finally:
        store.close()
        events.flush()
    summary = {"run_id": events.run_id, "expired": sum(r["expired"] for r in results),
               "previous_dropped": dropped,
               "deleted": sum(r["deleted"] for r in results), "dry_run": dry_run,
               "seconds": round(time.perf_counter() - clock, 3),
               "collections": {r["collection"]: {"expired": r["expired"], "deleted": r["deleted"]}
                               for r in results}}
    if unlisted:  # pruned by no one: said in the summary and the log, not skipped in silence
        logger.warning("not pruned: %s; %s", ", ".join(unlisted), UNLISTED_FIX)
        summary.update(unlisted=unlisted, unlisted_fix=UNLISTED_FIX)
    return summary


def _snapshot(settings: Settings, store: VectorStore, events: EventLog, collection: str) -> None:
    """Points left per declared source of the collection, for `fct_index_size`."""
    now = utcnow()
    for source in settings.sources:
        # Sources declare the name readers use; an alias resolves to the collection pruned.
        if store.real_name(settings.collection_for(source)) == collection:
            events.add("index_snapshots", collection=collection, source=source.name,
                       points=store.count(collection, Match(source=source.name)), recorded_at=now)
