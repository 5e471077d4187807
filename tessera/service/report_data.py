"""What the dashboard shows, read straight from the run events (no dbt build needed): freshness
of each source (declared ones against their own schedule, ad-hoc ones by their last ingest), the
quality trend per set and mode, documents indexed per source per day, failed runs and their
reasons, search latency p50/p99 per day, and GPU seconds per day.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tessera.core.events import read_events
from tessera.core.settings import ADHOC_PREFIX, Settings

# A source is stale once this many of its scheduled runs have passed without a completed one.
STALE_AFTER_MISSED = 2
# Unscheduled sources are judged against a day.
UNSCHEDULED_INTERVAL = timedelta(hours=24)
# The charts per day cover this many UTC days, today included.
DAYS = 14
# Requests that are searches (as stg_tessera__search_requests.is_search says): the API's and
# MCP's search routes, the page's search box and `tessera search`. Document lookups and
# collection listings are not.
SEARCH_ROUTES = frozenset({"/v1/search", "tool/search", "page/search", "cli/search"})
# The failure-reason tables show this many rows.
REASONS_SHOWN = 10


@dataclass
class Freshness:
    """One source against its schedule."""

    source: str
    schedule: str | None
    last_success: datetime | None
    missed: int
    status: str  # fresh | stale | never | ad-hoc


@dataclass
class ReportData:
    """Everything the dashboard draws. The per-day lists are long rows (one per day and series,
    days without any left out), as the charts take them."""

    generated_at: datetime
    freshness: list[Freshness]
    quality: dict[str, list[tuple[datetime, float]]]  # "set · mode" -> (started, nDCG@10)
    daily: list[dict[str, Any]]  # day, runs, documents, failures, input_failures
    collections: list[dict[str, Any]] = field(default_factory=list)  # catalog.collection_cards
    volume: list[dict[str, Any]] = field(default_factory=list)  # day, source, documents
    latency: list[dict[str, Any]] = field(default_factory=list)  # day, stat, ms, searches
    failures: list[dict[str, Any]] = field(default_factory=list)  # day, kind, runs
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)
    quarantine_reasons: list[dict[str, Any]] = field(default_factory=list)
    gpu: list[dict[str, Any]] = field(default_factory=list)  # day, gpu_type, seconds
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # latest_comparisons


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def missed_runs(schedule: str | None, since: datetime, now: datetime, tz: str,
                limit: int = STALE_AFTER_MISSED + 1) -> int:
    """Scheduled times in (since, now], counted up to `limit` (cron in `tz`; None: daily)."""
    if not schedule:
        return min(int((now - since) / UNSCHEDULED_INTERVAL), limit)
    from cronsim import CronSim

    zone = ZoneInfo(tz)
    count = 0
    for when in CronSim(schedule, since.astimezone(zone)):
        if when > now.astimezone(zone) or count >= limit:
            break
        count += 1
    return count


def freshness(settings: Settings, runs: list[dict[str, Any]], now: datetime,
              stale_after: int = STALE_AFTER_MISSED) -> list[Freshness]:
    """Each declared source: its last completed ingest and how many scheduled runs it missed."""
    last = last_completed(runs)
    out = []
    for src in settings.sources:
        seen = last.get(src.name)
        if seen is None:
            out.append(Freshness(src.name, src.schedule, None, 0, "never"))
            continue
        missed = missed_runs(src.schedule, seen, now, settings.timezone, stale_after + 1)
        out.append(Freshness(src.name, src.schedule, seen, missed,
                             "stale" if missed >= stale_after else "fresh"))
    return out


def last_completed(runs: list[dict[str, Any]]) -> dict[str, datetime]:
    """Per source name, when its last completed ingest finished (UTC): what the page's
    freshness and the /metrics freshness gauges both read."""
    last: dict[str, datetime] = {}
    for row in runs:
        if row.get("status") != "completed" or (row.get("flow") or "ingest") != "ingest":
            continue
        when = row.get("finished_at") or row.get("started_at")
        if when is None:
            continue
        finished = _as_utc(when)
        for name in (row.get("sources") or "").split(","):
            if name and (name not in last or finished > last[name]):
                last[name] = finished
    return last


def adhoc_freshness(settings: Settings, runs: list[dict[str, Any]], names: list[str]
                    ) -> list[Freshness]:
    """The ad-hoc sources `names` (catalog.adhoc_sources): their last completed ingest, verdict
    "ad-hoc". They have no schedule (`tessera ingest PATH` refreshes one when someone reruns it),
    so they are not judged stale: the page shows how old they are instead."""
    last = last_completed(runs)
    return [Freshness(name, None, last.get(name), 0, "ad-hoc" if name in last else "never")
            for name in names]


def readable_source(name: str) -> str:
    """A source's name as the page shows it: an ad-hoc one's slug without its prefix and path
    hash (`adhoc-notes-0123abcd` -> `notes (ad-hoc)`), a declared one as it is."""
    if not name.startswith(ADHOC_PREFIX):
        return name
    slug, _, digest = name.removeprefix(ADHOC_PREFIX).rpartition("-")
    return f"{slug if slug and len(digest) == 8 else name} (ad-hoc)"


def quality_trend(rows: list[dict[str, Any]]) -> dict[str, list[tuple[datetime, float]]]:
    """nDCG@10 over time per (set, mode); runs without a mode were dense."""
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for row in rows:
        if row.get("ndcg_at_10") is None:
            continue
        key = f"{row.get('dataset')} · {row.get('mode') or 'dense'}"
        series[key].append((_as_utc(row["started_at"]), float(row["ndcg_at_10"])))
    return {k: sorted(v) for k, v in sorted(series.items())}


def daily_ingest(runs: list[dict[str, Any]], days: int = 14, now: datetime | None = None
                 ) -> list[dict[str, Any]]:
    """Per UTC day of the last `days`: runs, documents indexed, failed runs (input vs pipeline)."""
    now = now or datetime.now(UTC)
    first = (now - timedelta(days=days - 1)).date()
    table = {first + timedelta(days=i): {"runs": 0, "documents": 0, "failures": 0,
                                         "input_failures": 0} for i in range(days)}
    for row in runs:
        day = _as_utc(row["started_at"]).date()
        if day not in table:
            continue
        cell = table[day]
        cell["runs"] += 1
        cell["documents"] += int(row.get("indexed") or 0)
        if row.get("status") == "failed_input":
            cell["input_failures"] += 1
        elif row.get("status") == "failed":
            cell["failures"] += 1
    return [{"day": d.isoformat(), **v} for d, v in sorted(table.items())]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank) of latency samples, with their count."""
    if not samples_ms:
        return {}
    ordered = sorted(samples_ms)

    def rank(p: float) -> float:
        """The p-th percentile by nearest rank: the ceil(p * n)-th smallest."""
        # Rounded before ceil: 0.07 * 100 is 7.000000000000001 in floats, whose ceil is 8.
        return round(ordered[max(0, math.ceil(round(p * len(ordered), 9)) - 1)], 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "count": float(len(ordered))}


def _window(now: datetime, days: int) -> tuple[Any, Any]:
    """The first and last UTC day of the charts' window."""
    return (now - timedelta(days=days - 1)).date(), now.date()


def _day(value: Any, now: datetime, days: int) -> str | None:
    """The UTC day of a timestamp as YYYY-MM-DD, None outside the window."""
    if value is None:
        return None
    day = _as_utc(value).date()
    first, last = _window(now, days)
    return day.isoformat() if first <= day <= last else None


def _long_rows(totals: dict[tuple[str, str], float], key: str, value: str
               ) -> list[dict[str, Any]]:
    """{(day, series): total} as rows {day, key: series, value: total}, by day then series."""
    return [{"day": day, key: series, value: total}
            for (day, series), total in sorted(totals.items()) if total]


def volume_by_source(documents: list[dict[str, Any]], now: datetime, days: int = DAYS
                     ) -> list[dict[str, Any]]:
    """Documents indexed (new or changed) per source per UTC day, from documents_indexed."""
    totals: dict[tuple[str, str], float] = defaultdict(int)
    for row in documents:
        day = _day(row.get("recorded_at"), now, days)
        if day and row.get("outcome") == "indexed":
            totals[(day, str(row.get("source")))] += 1
    return _long_rows(totals, "source", "documents")


def _is_search(row: dict[str, Any]) -> bool:
    """A search that ran (not a refused one, not a document lookup)."""
    return row.get("route") in SEARCH_ROUTES and int(row.get("status") or 0) < 400 and row.get("latency_ms") is not None


def latency_by_day(requests: list[dict[str, Any]], now: datetime, days: int = DAYS
                   ) -> list[dict[str, Any]]:
    """Search latency p50 and p99 (nearest rank) per UTC day over every interface (API, MCP,
    CLI, the page), from search_requests."""
    samples: dict[str, list[float]] = defaultdict(list)
    for row in requests:
        day = _day(row.get("recorded_at"), now, days)
        if day and _is_search(row):
            samples[day].append(float(row["latency_ms"]))
    out = []
    for day, values in sorted(samples.items()):
        stats = percentiles(values)
        out += [{"day": day, "stat": stat, "ms": stats[stat], "searches": len(values)}
                for stat in ("p50", "p99")]
    return out


def failures_by_day(runs: list[dict[str, Any]], now: datetime, days: int = DAYS
                    ) -> list[dict[str, Any]]:
    """Failed ingest runs per UTC day: `input` (the source's data was refused) or `pipeline`."""
    totals: dict[tuple[str, str], float] = defaultdict(int)
    for row in runs:
        kind = {"failed": "pipeline", "failed_input": "input"}.get(str(row.get("status")))
        day = _day(row.get("started_at"), now, days)
        if kind and day:
            totals[(day, kind)] += 1
    return _long_rows(totals, "kind", "runs")


def failure_reasons(runs: list[dict[str, Any]], shown: int = REASONS_SHOWN
                    ) -> list[dict[str, Any]]:
    """The latest failed runs, newest first: when, sources, input or pipeline, the error."""
    failed = [r for r in runs if r.get("status") in ("failed", "failed_input")]
    failed.sort(key=lambda r: _as_utc(r["started_at"]), reverse=True)
    return [{"started_at": _as_utc(r["started_at"]), "sources": r.get("sources") or "",
             "kind": "input" if r["status"] == "failed_input" else "pipeline",
             "error": r.get("error") or "(no error recorded)"} for r in failed[:shown]]


def quarantine_reasons(rows: list[dict[str, Any]], shown: int = REASONS_SHOWN
                       ) -> list[dict[str, Any]]:
    """Why records were quarantined, per source and reason, most records first. A record
    re-checked by a later run counts once."""
    records: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        why = row.get("reason") or row.get("expectation") or "unknown"
        records[(str(row.get("source")), f"{row.get('suite')}: {why}")].add(str(row.get("doc_id")))
    ranked = sorted(records.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{"source": source, "reason": reason, "records": len(docs)}
            for (source, reason), docs in ranked[:shown]]


def gpu_by_day(runs: list[dict[str, Any]], captions: list[dict[str, Any]], now: datetime,
               days: int = DAYS) -> list[dict[str, Any]]:
    """GPU seconds per UTC day and GPU type, of ingest runs (embedding) and caption runs. The
    cost is priced by the marts (fct_embedding_cost, fct_caption_cost), not here."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row, when in [(r, r.get("started_at")) for r in runs] + [(c, c.get("recorded_at"))
                                                                  for c in captions]:
        day = _day(when, now, days)
        if day and row.get("gpu_type") and row.get("gpu_seconds"):
            totals[(day, str(row["gpu_type"]))] += float(row["gpu_seconds"])
    return [{**r, "seconds": round(r["seconds"], 1)} for r in _long_rows(totals, "gpu_type", "seconds")]


def latest_comparisons(rows: list[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The latest paired comparisons (migrations, nightly runs, tuning), newest first: their
    nDCG@10 row (difference, 95% interval, p-value, power) and the decision."""
    ndcg = [r for r in rows if r["metric"] == "ndcg@10"]
    return sorted(ndcg, key=lambda r: (r["recorded_at"], r["run_id"]), reverse=True)[:limit]


def gather(settings: Settings, now: datetime | None = None, found: dict[str, Any] | None = None,
           pending: list[dict[str, Any]] | None = None) -> ReportData:
    """Read every event table the page needs, once. `found` is SearchService.collections() where
    a service is open (else the store is opened here); `pending` are search_requests rows this
    process has not written yet, so a search shows on the next page load."""
    from tessera.service.catalog import adhoc_sources, collection_cards, written

    now = now or datetime.now(UTC)
    events = settings.events_dir
    runs = read_events(events, "ingest_runs")
    history = written(events)
    requests = read_events(events, "search_requests") + list(pending or [])
    return ReportData(
        generated_at=now, quality=quality_trend(read_events(events, "quality_runs")),
        freshness=freshness(settings, runs, now)
        + adhoc_freshness(settings, runs, adhoc_sources(history, settings)),
        daily=daily_ingest(runs, now=now),
        collections=collection_cards(found or _found(settings), history, now),
        volume=volume_by_source(read_events(events, "documents_indexed"), now),
        latency=latency_by_day(requests, now), failures=failures_by_day(runs, now),
        failure_reasons=failure_reasons(runs),
        quarantine_reasons=quarantine_reasons(read_events(events, "quarantine")),
        gpu=gpu_by_day(runs, read_events(events, "caption_runs"), now),
        comparisons=latest_comparisons(read_events(events, "quality_comparisons")))


def _found(settings: Settings) -> dict[str, Any]:
    """The store's collections in SearchService.collections()'s shape, read with `tessera
    status` (the static report has no search service open); none when the store is busy."""
    try:
        from tessera.service.status import status

        held = status(settings, last=0)
    except Exception:  # noqa: BLE001 - a locked or missing store must not take the page down
        return {"collections": [], "aliases": {}}
    aliases: dict[str, str] = held["aliases"]
    return {"aliases": aliases, "collections": [
        {"name": c["name"], "model": c["model"], "model_name": None, "modalities": [],
         "sparse": True if c["sparse"] else None, "points": c["points"],
         "aliases": sorted(a for a, target in aliases.items() if target == c["name"])}
        for c in held["collections"]]}


def publish(settings: Settings, steps: Any) -> None:
    """The page's status view as report tables (Prefect table artifacts inside a flow run):
    freshness against schedule, the quality trend, and ingest volume and failures per day."""
    data = gather(settings)
    steps.table("freshness", [{"source": f.source, "schedule": f.schedule or "none (daily)",
                               "last_success": f"{f.last_success:%Y-%m-%d %H:%M}" if f.last_success
                               else "never", "missed": f.missed, "verdict": f.status}
                              for f in data.freshness],
                "Freshness of each source: declared ones against their own schedule, "
                "ad-hoc ones by their last ingest")
    steps.table("quality-trend", [{"set_and_mode": key, "started": f"{when:%Y-%m-%d %H:%M}",
                                   "ndcg_at_10": round(value, 4)}
                                  for key, points in data.quality.items() for when, value in points],
                "nDCG@10 per quality set and mode over time")
    steps.table("ingest-per-day", data.daily, "Documents indexed and failed runs per UTC day")
