"""Run events as the flows write them, for the marts to build from: two ingest runs and a prune
over two days, or single rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tessera.core.events import EventLog

DAY1 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
DAY2 = datetime(2024, 5, 2, 10, 0, tzinfo=UTC)


def write_run(log: EventLog, started: datetime, **row: Any) -> None:
    """One run summary with every stage timed, as the ingest flow writes it."""
    stages = ("discover", "load", "chunk", "diff", "embed", "upsert", "delete")
    fields: dict[str, Any] = {
        "flow": "ingest", "sources": "all", "collection": "tessera",
        "model_id": "all-minilm-l6-v2", "status": "completed", "started_at": started,
        "finished_at": started + timedelta(seconds=row["seconds"]),
        **{f"{s}_seconds": 0.1 for s in stages},
    }
    log.add("ingest_runs", **{**fields, **row})


def write_docs(log: EventLog, at: datetime, source: str, outcome: str, n: int) -> None:
    """`n` documents of `source` with one outcome, and the discover batch that found them."""
    for i in range(n):
        log.add(
            "documents_indexed", source=source, collection="tessera", doc_id=f"{source}-{i}",
            outcome=outcome, modality="text", content_hash=f"h{i}", chunk_count=2, bytes=100,
            recorded_at=at,
        )
    log.add("ingest_batches", source=source, stage="discover", batch_index=0, items=n,
            seconds=0.01, recorded_at=at)


def write_two_runs(events: Path) -> None:
    """A CPU run on day 1 and an L4 (Modal) run on day 2 that re-sees most documents."""
    r1 = EventLog(events, "20240501T100000-cpu00001")
    write_run(r1, DAY1, backend="local", device="cpu", gpu_type=None, seen=5, indexed=4,
              unchanged=0, quarantined=1, deleted=0, chunks_embedded=8, points_upserted=8,
              seconds=10.0, gpu_seconds=0.0)
    write_docs(r1, DAY1, "docs", "indexed", 3)
    write_docs(r1, DAY1, "notes", "indexed", 1)
    write_docs(r1, DAY1, "notes", "quarantined", 1)
    r1.add("contract_results", source="notes", suite="text_documents", expectation="min_length",
           column="text", severity="error", success=False, element_count=2, unexpected_count=1,
           recorded_at=DAY1)
    r1.add("contract_results", source="docs", suite="text_documents", expectation="min_length",
           column="text", severity="error", success=True, element_count=3, unexpected_count=0,
           recorded_at=DAY1)
    r1.add("quarantine", source="notes", doc_id="notes-bad", uri="notes/bad.txt",
           suite="text_documents", expectation="min_length", observed="0 chars",
           reason="text is empty", content_hash="h", recorded_at=DAY1)
    for source, points in (("docs", 6), ("notes", 2)):
        r1.add("index_snapshots", collection="tessera", source=source, points=points,
               recorded_at=DAY1)
    r1.flush()

    r2 = EventLog(events, "20240502T100000-gpu00002")
    write_run(r2, DAY2, backend="modal", device="L4", gpu_type="L4", seen=4, indexed=1,
              unchanged=3, quarantined=0, deleted=1, chunks_embedded=2, points_upserted=2,
              seconds=20.0, gpu_seconds=100.0)
    write_docs(r2, DAY2, "docs", "unchanged", 2)
    write_docs(r2, DAY2, "docs", "indexed", 1)
    write_docs(r2, DAY2, "notes", "unchanged", 1)
    write_docs(r2, DAY2, "notes", "deleted", 1)
    r2.add("index_snapshots", collection="tessera", source="docs", points=6, recorded_at=DAY2)
    r2.flush()

    prune = EventLog(events, "20240502T200000-prune003")
    prune.add("prune_runs", collection="tessera", expired=2, deleted=2, dry_run=False,
              seconds=0.5, started_at=DAY2 + timedelta(hours=10))
    prune.add("index_snapshots", collection="tessera", source="docs", points=4,
              recorded_at=DAY2 + timedelta(hours=10))
    prune.flush()
