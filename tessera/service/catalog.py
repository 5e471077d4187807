"""What the index holds, as agents read it (the MCP server's instructions and resources): each
collection with its aliases, model and size, the sources that wrote it and when it was last
written. Ad-hoc sources (`tessera ingest PATH`) are declared nowhere: only the `ingest_runs`
events name them, so sources and freshness are read from there, as `tessera status` reads runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.core.events import read_events
from tessera.core.settings import ADHOC_PREFIX, Settings


def written(events_dir: Path) -> dict[str, dict[str, Any]]:
    """Per collection, from its completed runs: the sources that wrote it ("sources", a set) and
    when the last one finished ("last_written", UTC)."""
    out: dict[str, dict[str, Any]] = {}
    for row in read_events(events_dir, "ingest_runs"):
        finished = row.get("finished_at") or row.get("started_at")
        if row.get("status") != "completed" or not isinstance(finished, datetime):
            continue
        finished = finished if finished.tzinfo else finished.replace(tzinfo=UTC)
        for collection, sources in _pairs(row):
            entry = out.setdefault(collection, {"sources": set(), "last_written": None})
            entry["sources"].update(sources)
            if entry["last_written"] is None or finished > entry["last_written"]:
                entry["last_written"] = finished
    return out


def _pairs(row: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(collection, its sources) for one run. A run lists its sources in order and the collections
    they wrote deduplicated, so the two pair up one to one only when no two sources shared a
    collection; otherwise each collection is credited with every source of the run."""
    sources = [s for s in (row.get("sources") or "").split(",") if s]
    collections = [c for c in (row.get("collection") or "").split(",") if c]
    if len(collections) == len(sources):
        return [(c, [s]) for c, s in zip(collections, sources, strict=True)]
    return [(c, sources) for c in collections]


def adhoc_sources(history: dict[str, dict[str, Any]], settings: Settings) -> list[str]:
    """The ad-hoc sources the runs wrote (declared ones excluded), by name."""
    declared = {s.name for s in settings.sources}
    names = {s for entry in history.values() for s in entry["sources"]}
    return sorted(n for n in names if n.startswith(ADHOC_PREFIX) and n not in declared)


def collection_cards(found: dict[str, Any], history: dict[str, dict[str, Any]],
                     now: datetime) -> list[dict[str, Any]]:
    """One card per collection of `found` (SearchService.collections()): the name users type
    (its first alias, else its own), model, size, sources and freshness; aliased ones first."""
    cards = []
    for c in found["collections"]:
        seen = history.get(c["name"], {})
        last = seen.get("last_written")
        cards.append({
            "name": c["aliases"][0] if c["aliases"] else c["name"], "collection": c["name"],
            "aliases": c["aliases"], "model": c["model"], "model_name": c["model_name"],
            "modalities": c["modalities"], "sparse": c["sparse"] is not None,
            "points": c["points"], "sources": sorted(seen.get("sources", ())),
            "last_written": last.isoformat() if last else None,
            "seconds_since_written": round((now - last).total_seconds()) if last else None})
    return sorted(cards, key=lambda card: (not card["aliases"], card["name"]))
