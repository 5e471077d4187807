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

from tessera.events import EventLog, new_run_id, utcnow

logger = logging.getLogger(__name__)

_MAX_ROWS = 5000


class RequestLog:
    """Queues one row per request; `flush` writes the queued rows (thread-safe)."""

    def __init__(self, events_dir: Path, log_queries: bool = False) -> None:
        self.run_id = new_run_id()
        self.log_queries = log_queries
        self._log = EventLog(events_dir, self.run_id)
        self._lock = threading.Lock()
        self._pending = 0

    def add(self, *, interface: str, route: str, status: int, latency_ms: float,
            mode: str | None = None, k: int | None = None, hits: int | None = None,
            collection: str | None = None, embed_ms: float | None = None,
            engine_ms: float | None = None, query: str | None = None) -> bool:
        """Queue a row; True when enough rows wait that the caller should flush."""
        row: dict[str, Any] = dict(
            request_id=uuid.uuid4().hex, interface=interface, route=route, status=status,
            mode=mode, k=k, hits=hits, collection=collection, latency_ms=latency_ms,
            embed_ms=embed_ms, engine_ms=engine_ms,
            query=query if self.log_queries else None, recorded_at=utcnow())
        with self._lock:
            self._log.add("search_requests", **row)
            self._pending += 1
            return self._pending >= _MAX_ROWS

    def flush(self) -> int:
        """Write what is queued; the number of rows written (errors are logged, rows kept)."""
        with self._lock:
            pending, self._pending = self._pending, 0
            try:
                self._log.flush()
            except OSError as exc:
                self._pending = pending
                logger.warning("could not write search_requests events (kept in memory): %s", exc)
                return 0
        return pending
