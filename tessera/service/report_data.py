"""What the web page shows, read straight from the run events (no dbt build needed): freshness
of each source against its own schedule, the quality trend per set and mode, ingest volume and
failures per day, and search latency percentiles.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tessera.core.events import read_events
from tessera.core.settings import Settings

# A source is stale once this many of its scheduled runs have passed without a completed one.
STALE_AFTER_MISSED = 2
# Unscheduled sources are judged against a day.
UNSCHEDULED_INTERVAL = timedelta(hours=24)


@dataclass
class Freshness:
    """One source against its schedule."""

    source: str
    schedule: str | None
    last_success: datetime | None
    missed: int
    status: str  # fresh | stale | never


@dataclass
class ReportData:
    """Everything the status view draws."""

    generated_at: datetime
    freshness: list[Freshness]
    quality: dict[str, list[tuple[datetime, float]]]  # "set · mode" -> (started, nDCG@10)
    daily: list[dict[str, Any]]  # day, runs, documents, failures, input_failures
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50/p95/p99 and count
    collections: list[dict[str, Any]] = field(default_factory=list)


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
    last: dict[str, datetime] = {}
    for row in runs:
        if row.get("status") != "completed" or (row.get("flow") or "ingest") != "ingest":
            continue
        finished = _as_utc(row.get("finished_at") or row["started_at"])
        for name in (row.get("sources") or "").split(","):
            if name and (name not in last or finished > last[name]):
                last[name] = finished
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
        return round(ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered))) - 1))], 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "count": float(len(ordered))}


def gather(settings: Settings, latency_ms: list[float] | None = None,
           now: datetime | None = None) -> ReportData:
    """Read every event table the page needs, once."""
    now = now or datetime.now(UTC)
    runs = read_events(settings.events_dir, "ingest_runs")
    collections: list[dict[str, Any]] = []
    try:
        from tessera.service.status import status

        collections = status(settings, last=0)["collections"]
    except Exception:  # noqa: BLE001 - a locked or missing store must not take the page down
        collections = []
    return ReportData(generated_at=now, freshness=freshness(settings, runs, now),
                      quality=quality_trend(read_events(settings.events_dir, "quality_runs")),
                      daily=daily_ingest(runs, now=now), latency_ms=percentiles(latency_ms or []),
                      collections=collections)


def publish(settings: Settings, steps: Any) -> None:
    """The page's status view as report tables (Prefect table artifacts inside a flow run):
    freshness against schedule, the quality trend, and ingest volume and failures per day."""
    data = gather(settings)
    steps.table("freshness", [{"source": f.source, "schedule": f.schedule or "none (daily)",
                               "last_success": f"{f.last_success:%Y-%m-%d %H:%M}" if f.last_success
                               else "never", "missed": f.missed, "verdict": f.status}
                              for f in data.freshness],
                "Freshness of each declared source against its own schedule")
    steps.table("quality-trend", [{"set_and_mode": key, "started": f"{when:%Y-%m-%d %H:%M}",
                                   "ndcg_at_10": round(value, 4)}
                                  for key, points in data.quality.items() for when, value in points],
                "nDCG@10 per quality set and mode over time")
    steps.table("ingest-per-day", data.daily, "Documents indexed and failed runs per UTC day")
