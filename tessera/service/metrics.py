"""Prometheus metrics for the search service: requests, search time split, errors, and the
index itself (points per collection, seconds since each source's last successful ingest, the
scheduled runs each declared source missed since, records quarantined per source).

Each app has its own registry, so two apps in one process (tests) never share counters. Labels
carry route templates (`/v1/documents/{doc_id}`), never paths, query text or keys.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tessera.core.events import read_events
from tessera.service.query_cache import CacheStats
from tessera.service.report_data import last_completed, missed_runs

logger = logging.getLogger(__name__)

# A source weeks behind need not count every missed run of a per-minute cron at each scrape.
MISSED_RUNS_CAP = 100

# Search latencies live between 1 ms and a second; the 30 ms goal sits on a boundary.
_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2,
            0.5, 1.0, 2.5, 5.0)


class IndexCollector(Collector):
    """Gauges read at scrape time: points per collection, freshness per source (its run events
    re-read at most every `cache_seconds`), quarantined records per source."""

    def __init__(self, points: Callable[[], dict[str, int]], events_dir: Path,
                 schedules: dict[str, str | None] | None = None, timezone: str = "UTC",
                 cache_seconds: float = 15.0, clock: Callable[[], float] = time.time) -> None:
        self._points = points
        self._events_dir = events_dir
        # Declared sources and their cron (None: judged against a day, as the report page does).
        self._schedules = schedules or {}
        self._timezone = timezone
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._last_ok: dict[str, float] = {}
        self._quarantined: dict[str, int] = {}
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def _events(self) -> tuple[dict[str, float], dict[str, int]]:
        """Each source's last completed ingest (epoch seconds) and its quarantined records,
        re-read from the events at most every `cache_seconds`."""
        with self._lock:
            if self._clock() - self._read_at >= self._cache_seconds:
                runs = read_events(self._events_dir, "ingest_runs")
                self._last_ok = {source: at.timestamp()
                                 for source, at in last_completed(runs).items()}
                self._quarantined = quarantined_records(read_events(self._events_dir,
                                                                    "quarantine"))
                self._read_at = self._clock()
            return dict(self._last_ok), dict(self._quarantined)

    def collect(self) -> Iterator[Metric]:
        """Yield the index gauges (an unreadable store or event file yields none, not an error)."""
        points = GaugeMetricFamily("tessera_collection_points", "Points in each collection, as "
                                   "searches see it", labels=["collection"])
        try:
            for name, count in self._points().items():
                points.add_metric([name], count)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a busy store
            logger.warning("points per collection unavailable: %s", exc)
        yield points
        try:
            last_ok, quarantined = self._events()
        except Exception as exc:  # noqa: BLE001
            logger.warning("ingest events unavailable: %s", exc)
            last_ok, quarantined = {}, {}
        yield from self._freshness(last_ok)
        refused = CounterMetricFamily("tessera_quarantined_records",
                                      "Records refused into quarantine, per source (one per "
                                      "record and run)", labels=["source"])
        for source, count in sorted(quarantined.items()):
            refused.add_metric([source], count)
        yield refused

    def _freshness(self, last_ok: dict[str, float]) -> Iterator[Metric]:
        """Seconds since each source's last completed ingest, and the scheduled runs each
        declared source missed since then (the report page calls a source stale at 2)."""
        now = self._clock()
        fresh = GaugeMetricFamily("tessera_source_seconds_since_last_ingest",
                                  "Seconds since each source's last successful ingest",
                                  labels=["source"])
        missed = GaugeMetricFamily("tessera_source_missed_runs",
                                   "Scheduled runs of each declared source since its last "
                                   f"successful ingest (a day when unscheduled; at most "
                                   f"{MISSED_RUNS_CAP})", labels=["source"])
        for source, at in sorted(last_ok.items()):
            fresh.add_metric([source], max(0.0, now - at))
            if source in self._schedules:
                count = missed_runs(self._schedules[source], datetime.fromtimestamp(at, UTC),
                                    datetime.fromtimestamp(now, UTC), self._timezone,
                                    MISSED_RUNS_CAP)
                missed.add_metric([source], count)
        yield fresh
        yield missed


def quarantined_records(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Records quarantined per source: one per (run, record), however often a run wrote it."""
    seen: dict[str, set[tuple[str, str]]] = {}
    for row in rows:
        key = (str(row.get("run_id")), str(row.get("doc_id") or row.get("uri")))
        seen.setdefault(row.get("source") or "unknown", set()).add(key)
    return {source: len(keys) for source, keys in seen.items()}


class CacheCollector(Collector):
    """The query caches' counters, read at scrape time (one series per model and runtime)."""

    def __init__(self, stats: Callable[[], dict[str, CacheStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Yield hits, misses, entries and capacity per cache."""
        hits = CounterMetricFamily("tessera_query_cache_hits", "Queries answered from the query "
                                   "cache, by model and runtime", labels=["model"])
        misses = CounterMetricFamily("tessera_query_cache_misses", "Queries the model embedded "
                                     "(not in the cache), by model and runtime", labels=["model"])
        entries = GaugeMetricFamily("tessera_query_cache_entries", "Query vectors held",
                                    labels=["model"])
        capacity = GaugeMetricFamily("tessera_query_cache_capacity", "Query vectors the cache "
                                     "may hold (api.query_cache_size)", labels=["model"])
        for model, s in sorted(self._stats().items()):
            hits.add_metric([model], s.hits)
            misses.add_metric([model], s.misses)
            entries.add_metric([model], s.entries)
            capacity.add_metric([model], s.capacity)
        yield from (hits, misses, entries, capacity)


class SnapshotCollector(Collector):
    """The search snapshots of the embedded store, read at scrape time (tessera/service/
    snapshot.py): what the last one cost, how many were taken, whether any was torn."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def collect(self) -> Iterator[Metric]:
        """Yield the last snapshot's seconds and bytes, the refreshes and the torn count."""
        last = dict(self._reader.last_take)
        seconds = GaugeMetricFamily("tessera_snapshot_last_seconds", "The last search "
                                    "snapshot: the writer's lock held (phase=lock), the whole "
                                    "refresh (phase=take)", labels=["phase"])
        size = GaugeMetricFamily("tessera_snapshot_last_bytes", "The last search snapshot: "
                                 "bytes copied (kind=copied), shared with the shard by hard "
                                 "links (kind=linked)", labels=["kind"])
        if last:
            seconds.add_metric(["lock"], last["lock_s"])
            seconds.add_metric(["take"], last["take_s"])
            size.add_metric(["copied"], last["copied_bytes"])
            size.add_metric(["linked"], last["linked_bytes"])
        yield from (seconds, size)
        yield CounterMetricFamily("tessera_snapshot_refreshes", "Search snapshots taken after "
                                  "the first", value=self._reader.refreshes)
        yield CounterMetricFamily("tessera_snapshot_torn", "Snapshots found sharing a file a "
                                  "writer changed in place (a fresh one replaced each; 0 "
                                  "expected)", value=self._reader.torn)


class Metrics:
    """The service's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram("tessera_http_request_duration_seconds",
                                  "HTTP request latency by route, method and status",
                                  ["route", "method", "status"], buckets=_BUCKETS, registry=r)
        self.in_flight = Gauge("tessera_http_requests_in_flight", "Requests being served",
                               registry=r)
        self.errors = Counter("tessera_api_errors_total", "Error answers by kind", ["kind"],
                              registry=r)
        self.embed = Histogram("tessera_search_embed_seconds", "Query embedding time per search",
                               buckets=_BUCKETS, registry=r)
        self.engine = Histogram("tessera_search_engine_seconds",
                                "Vector store time per search", buckets=_BUCKETS, registry=r)
        self.hits = Histogram("tessera_search_hits", "Hits returned per search",
                              buckets=(0, 1, 5, 10, 20, 50, 100), registry=r)
        self.startup = Gauge("tessera_startup_seconds", "Cold start: process start to ready "
                             "(phase=ready), the first search's time (phase=first_search)",
                             ["phase"], registry=r)

    def watch_index(self, points: Callable[[], dict[str, int]], events_dir: Path,
                    schedules: dict[str, str | None] | None = None,
                    timezone: str = "UTC") -> None:
        """Add the index gauges (points, freshness, missed runs, quarantine)."""
        self.registry.register(IndexCollector(points, events_dir, schedules, timezone))

    def watch_snapshots(self, reader: Any) -> None:
        """Add the snapshot reader's gauges and counters."""
        self.registry.register(SnapshotCollector(reader))

    def watch_cache(self, stats: Callable[[], dict[str, CacheStats]]) -> None:
        """Add the query caches' counters."""
        self.registry.register(CacheCollector(stats))

    def observe_search(self, timings: dict[str, Any], hits: int) -> None:
        """One search's embed and engine time, and its hit count."""
        self.embed.observe(timings.get("embed_ms", 0.0) / 1000)
        self.engine.observe(timings.get("engine_ms", 0.0) / 1000)
        self.hits.observe(hits)
