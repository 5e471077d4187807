"""`search_requests` events, written in batches by each serving process.

Rows are queued in memory and written as one Parquet file per flush (every
`api.events_flush_seconds`, every `_MAX_ROWS` rows, and at shutdown), so a busy API adds no file
write to any request. A process killed hard loses at most one interval of rows.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.fs import writable
from tessera.core.settings import Settings
from tessera.core.telemetry import current_ids

logger = logging.getLogger(__name__)

_MAX_ROWS = 5000


class RequestLog:
    """Queues one row per request; `flush` writes the queued rows (thread-safe)."""

    def __init__(self, events_dir: Path, log_queries: bool = False) -> None:
        self.run_id = new_run_id()
        self.log_queries = log_queries
        self._log = EventLog(events_dir, self.run_id)
        self._lock = threading.Lock()  # held for a list append or swap only, never for I/O
        self._writing = threading.Lock()
        self._rows: list[dict[str, Any]] = []

    def add(self, *, interface: str, route: str, status: int, latency_ms: float,
            mode: str | None = None, k: int | None = None, hits: int | None = None,
            collection: str | None = None, embed_ms: float | None = None,
            engine_ms: float | None = None, query: str | None = None,
            key_id: str | None = None) -> bool:
        """Queue a row (with the trace and span it is added in); True when enough rows wait
        that the caller should flush."""
        trace_id, span_id = current_ids()
        row: dict[str, Any] = dict(
            request_id=uuid.uuid4().hex, interface=interface, route=route, status=status,
            mode=mode, k=k, hits=hits, collection=collection, latency_ms=latency_ms,
            embed_ms=embed_ms, engine_ms=engine_ms,
            query=query if self.log_queries else None, key_id=key_id, trace_id=trace_id,
            span_id=span_id, recorded_at=utcnow())
        with self._lock:
            self._rows.append(row)
            return len(self._rows) >= _MAX_ROWS

    def pending(self) -> list[dict[str, Any]]:
        """The rows queued and not yet written (copies), for a reader that must see them now."""
        with self._lock:
            return [dict(row) for row in self._rows]

    def flush(self) -> int:
        """Write what is queued as one file; the number of rows written. The event loop only
        ever waits for a list swap: the write happens outside that lock. On an error the rows
        are kept for the next flush, and the error is logged."""
        with self._writing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            for row in rows:
                self._log.add("search_requests", **row)
            try:
                self._log.flush()
            except OSError as exc:  # the rows stay queued in the EventLog for the next flush
                logger.warning("could not write search_requests events (kept in memory): %s", exc)
                return 0
        return len(rows)


def record_search(settings: Settings, interface: str, answer: dict[str, Any], *, k: int,
                  latency_ms: float, timings: dict[str, float], query: str | None) -> None:
    """One search answered outside a serving process (`tessera search`) as its own
    search_requests row, written now. A home that cannot be written records nothing: the
    search has answered, and a read-only index is searchable."""
    if not writable(settings.events_dir):
        return
    log = RequestLog(settings.events_dir, settings.api.log_queries)
    log.add(interface=interface, route=f"{interface}/search", status=200, latency_ms=latency_ms,
            mode=answer["mode"], k=k, hits=len(answer["results"]),
            collection=answer["collection"], query=query, embed_ms=timings.get("embed_ms"),
            engine_ms=timings.get("engine_ms"))
    log.flush()
