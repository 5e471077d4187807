"""Status and quarantine listings: what the index holds, the last runs, what was refused and why."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from tessera.core.events import read_events
from tessera.core.settings import Settings
from tessera.store import open_store
from tessera.store.collections import UNLISTED_FIX


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
        unlisted = store.unlisted()
    finally:
        store.close()
    finished = read_events(settings.events_dir, "ingest_runs")
    unfinished = unfinished_runs(settings.events_dir, {r["run_id"] for r in finished}, last)
    runs = sorted(finished + unfinished,
                  key=lambda r: r["started_at"], reverse=True)
    keep = ("run_id", "status", "started_at", "seconds", "seen", "indexed", "unchanged",
            "quarantined", "deleted", "chunks_embedded")
    out = {"home": str(settings.home), "collections": collections, "aliases": aliases,
           "last_runs": [{k: r.get(k) for k in keep} for r in runs[:last]]}
    if unlisted:  # only when there are some: most stores never have one
        out["unlisted"] = unlisted
        out["unlisted_fix"] = UNLISTED_FIX
    return out


def quarantine_rows(settings: Settings, run_id: str | None = None) -> list[dict[str, Any]]:
    """Quarantined records, newest first, optionally for one run."""
    rows = read_events(settings.events_dir, "quarantine")
    if run_id:
        rows = [r for r in rows if r["run_id"] == run_id]
    return sorted(rows, key=lambda r: (r["recorded_at"], r["doc_id"]), reverse=True)


def unfinished_runs(events_dir: Path, finished: set[str], newest: int | None = None
                    ) -> list[dict[str, Any]]:
    """Ingest runs that left batch events but no summary (a run writes its summary last):
    `running` while the process that started it lives on this machine, else `killed`, as the
    marts call them (fct_ingest_runs). Counts come from the documents the run recorded. With
    `newest`, only that many of the latest (run ids start with their start time), so killed runs
    piling up over months do not make every `status` read them all."""
    folder = events_dir / "ingest_batches"
    # A run's files are named <run_id>-<part>.parquet; `_schema.parquet` is no run's.
    ids = {p.name.rsplit("-", 1)[0] for p in folder.glob("*.parquet")
           if not p.name.startswith("_")} - finished
    chosen = sorted(ids, reverse=True)[:newest] if newest is not None else sorted(ids)
    return [_unfinished(events_dir, run_id) for run_id in sorted(chosen)]


def _unfinished(events_dir: Path, run_id: str) -> dict[str, Any]:
    batches = read_events(events_dir, "ingest_batches", run_id)
    started = min(r["recorded_at"] for r in batches)
    last = max(r["recorded_at"] for r in batches)
    live = any(r["host"] == socket.gethostname() and r["pid"] is not None
               and _alive(int(r["pid"]), started) for r in batches if r["stage"] == "start")
    documents = read_events(events_dir, "documents_indexed", run_id)
    outcomes = [r["outcome"] for r in documents]
    chunks = sum(r["chunk_count"] or 0 for r in documents if r["outcome"] == "indexed")
    counts = {k: outcomes.count(k) for k in ("indexed", "unchanged", "quarantined", "deleted")}
    return {"run_id": run_id, "status": "running" if live else "killed", "started_at": started,
            "seconds": (last - started).total_seconds(),
            "seen": counts["indexed"] + counts["unchanged"] + counts["quarantined"],
            **counts, "chunks_embedded": chunks}


def _alive(pid: int, since: datetime) -> bool:
    """Process `pid` lives, and started before `since` (a pid the system handed out again
    after the run's process died belongs to a younger process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    born = started_at(pid)
    return born is None or born <= since.timestamp() + 2  # boot time has 1 s resolution


def started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), from /proc; None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return None
    # Field 22 (starttime, in clock ticks since boot); fields restart at 3 after the ")" that
    # ends the command name, which may itself hold spaces.
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return boot + ticks / os.sysconf("SC_CLK_TCK")
