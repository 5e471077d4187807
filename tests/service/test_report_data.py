"""The numbers under the dashboard, from hand-made event rows and an injected `now`: volume per
source per day, search latency per day (nearest-rank percentiles), ad-hoc sources' freshness,
failures with their reasons, GPU seconds per day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tessera.core.settings import ADHOC_PREFIX, load_settings
from tessera.service.report_data import (
    adhoc_freshness,
    failure_reasons,
    failures_by_day,
    gpu_by_day,
    latency_by_day,
    percentiles,
    quarantine_reasons,
    readable_source,
    volume_by_source,
)

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)
YESTERDAY = NOW - timedelta(days=1)


def test_percentiles_are_nearest_rank() -> None:
    """The p-th percentile is the ceil(p * n)-th smallest sample, never an average."""
    assert percentiles([5.0, 1.0, 4.0, 2.0, 3.0])["p50"] == 3.0  # ceil(2.5) = 3rd
    samples = [float(v) for v in range(1, 101)]
    assert percentiles(samples)["p99"] == 99.0 and percentiles(samples)["p50"] == 50.0
    assert percentiles([7.0])["p99"] == 7.0 and percentiles([]) == {}


def test_volume_is_counted_per_source_per_day() -> None:
    rows = [{"source": "a", "outcome": "indexed", "recorded_at": NOW},
            {"source": "a", "outcome": "indexed", "recorded_at": NOW},
            {"source": "a", "outcome": "unchanged", "recorded_at": NOW},  # not indexed again
            {"source": "b", "outcome": "indexed", "recorded_at": YESTERDAY},
            {"source": "b", "outcome": "indexed", "recorded_at": NOW - timedelta(days=40)}]
    assert volume_by_source(rows, NOW) == [
        {"day": "2026-12-01", "source": "b", "documents": 1},
        {"day": "2026-12-02", "source": "a", "documents": 2}]


def test_latency_per_day_counts_searches_of_every_interface() -> None:
    rows = [{"interface": "http", "route": "/v1/search", "status": 200, "latency_ms": ms,
             "recorded_at": NOW} for ms in (10.0, 20.0, 30.0, 40.0, 500.0)]
    rows += [{"interface": "mcp", "route": "tool/search", "status": 200, "latency_ms": 8.0,
              "recorded_at": YESTERDAY},
             {"interface": "cli", "route": "cli/search", "status": 200, "latency_ms": 4.0,
              "recorded_at": YESTERDAY},
             # not searches: a refused one and a document lookup
             {"interface": "http", "route": "/v1/search", "status": 422, "latency_ms": 1.0,
              "recorded_at": YESTERDAY},
             {"interface": "http", "route": "/v1/documents/{doc_id}", "status": 200,
              "latency_ms": 1.0, "recorded_at": YESTERDAY}]
    out = latency_by_day(rows, NOW)
    assert out == [
        {"day": "2026-12-01", "stat": "p50", "ms": 4.0, "searches": 2},
        {"day": "2026-12-01", "stat": "p99", "ms": 8.0, "searches": 2},
        {"day": "2026-12-02", "stat": "p50", "ms": 30.0, "searches": 5},
        {"day": "2026-12-02", "stat": "p99", "ms": 500.0, "searches": 5}]


def test_adhoc_sources_are_listed_with_their_last_ingest(make_config: Callable[..., Path],
                                                        tmp_path: Path) -> None:
    settings = load_settings(make_config(sources=[{"name": "docs", "path": str(tmp_path)}]))
    adhoc = f"{ADHOC_PREFIX}my-notes-0123abcd"
    runs = [{"status": "completed", "flow": "ingest", "sources": adhoc, "started_at": YESTERDAY,
             "finished_at": YESTERDAY + timedelta(minutes=2)},
            {"status": "completed", "flow": "ingest", "sources": f"docs,{adhoc}",
             "started_at": NOW - timedelta(hours=3), "finished_at": NOW - timedelta(hours=2)},
            {"status": "failed", "flow": "ingest", "sources": f"{ADHOC_PREFIX}broken-99999999",
             "started_at": NOW, "finished_at": NOW}]
    (row,) = adhoc_freshness(settings, runs, [adhoc, f"{ADHOC_PREFIX}broken-99999999"])[:1]
    assert (row.source, row.status, row.schedule) == (adhoc, "ad-hoc", None)
    assert row.last_success == NOW - timedelta(hours=2)
    never = adhoc_freshness(settings, runs, [f"{ADHOC_PREFIX}broken-99999999"])[0]
    assert (never.status, never.last_success) == ("never", None)
    assert readable_source(adhoc) == "my-notes (ad-hoc)"
    assert readable_source("docs") == "docs"


def test_failures_keep_input_and_pipeline_apart_with_reasons() -> None:
    runs = [{"started_at": NOW, "status": "failed", "sources": "a", "error": "store locked"},
            {"started_at": YESTERDAY, "status": "failed_input", "sources": "b", "error": "bad"},
            {"started_at": YESTERDAY, "status": "completed", "sources": "a", "error": None}]
    assert failures_by_day(runs, NOW) == [
        {"day": "2026-12-01", "kind": "input", "runs": 1},
        {"day": "2026-12-02", "kind": "pipeline", "runs": 1}]
    reasons = failure_reasons(runs)
    assert [(r["sources"], r["kind"], r["error"]) for r in reasons] == [
        ("a", "pipeline", "store locked"), ("b", "input", "bad")]  # newest first
    quarantined = [{"source": "a", "doc_id": "x", "suite": "text", "reason": "empty text"},
                   {"source": "a", "doc_id": "x", "suite": "text", "reason": "empty text"},
                   {"source": "a", "doc_id": "y", "suite": "text", "reason": "empty text"},
                   {"source": "b", "doc_id": "z", "suite": "load", "reason": None,
                    "expectation": "readable"}]
    assert quarantine_reasons(quarantined) == [
        {"source": "a", "reason": "text: empty text", "records": 2},  # x re-checked counts once
        {"source": "b", "reason": "load: readable", "records": 1}]


def test_gpu_seconds_are_summed_per_day_and_gpu_type() -> None:
    runs = [{"started_at": NOW, "gpu_type": "L4", "gpu_seconds": 30.0},
            {"started_at": NOW, "gpu_type": "L4", "gpu_seconds": 12.5},
            {"started_at": NOW, "gpu_type": None, "gpu_seconds": None}]  # a CPU run
    captions = [{"recorded_at": YESTERDAY, "gpu_type": "T4", "gpu_seconds": 4.0}]
    assert gpu_by_day(runs, captions, NOW) == [
        {"day": "2026-12-01", "gpu_type": "T4", "seconds": 4.0},
        {"day": "2026-12-02", "gpu_type": "L4", "seconds": 42.5}]
    assert gpu_by_day([runs[-1]], [], NOW) == []


def test_the_page_lists_quality_comparisons_with_interval_and_p(
        make_config: Callable[..., Path]) -> None:
    """A migration's comparison, recorded as the gate records it, is on the dashboard with its
    nDCG@10 change, 95% interval, p-value, power and decision, newest first."""
    from tessera.core.events import EventLog
    from tessera.jobs.significance import compare, record
    from tessera.service.dashboard import dashboard
    from tessera.service.report_data import gather

    settings = load_settings(make_config())
    before = {f"q{i}": {"ndcg@10": 0.9} for i in range(30)}
    after = {f"q{i}": {"ndcg@10": 0.9 - 0.3 * (i % 3 == 0)} for i in range(30)}
    found = compare(before, after, ("ndcg@10",), 0.05, 0.02)
    for decision in ("refused", "switched"):
        log = EventLog(settings.events_dir, f"run-{decision}")
        record(log, settings.quality, "migration", "docs", "slice", "dense",
               ("live-collection", "shadow-collection"), found, (before, after), decision)
        log.flush()
    data = gather(settings, NOW)
    assert [r["decision"] for r in data.comparisons] == ["switched", "refused"]
    html, _ = dashboard(data)
    c = found["ndcg@10"]
    row = f"{c.difference:+.4f} [{c.low:+.4f}, {c.high:+.4f}]</td><td>{c.p_value:.3g}</td>"
    assert html.count(row) == 2 and "live-collection → shadow-collection" in html
    assert c.worse and c.p_value < 0.05
