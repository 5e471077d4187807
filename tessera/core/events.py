"""Append-only run events, one Parquet file per run and table, under TESSERA_HOME/events/<table>/.

Events are never updated. Each run writes its own files (named after the run id), so concurrent
runs and remote workers never share a file, and dbt reads them all with `read_parquet`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tessera.core.fs import atomic_write_with
from tessera.core.telemetry import current_ids

_TS = pa.timestamp("us", tz="UTC")
# Every row: its run, and the trace and span it was written in (tessera.core.telemetry; null
# for rows written outside any span, and in files from before traces).
_RUN = [("run_id", pa.string()), ("trace_id", pa.string()), ("span_id", pa.string())]

SCHEMAS: dict[str, pa.Schema] = {
    "ingest_runs": pa.schema(
        _RUN
        + [
            ("flow", pa.string()),  # ingest | quality | migrate (a migration's build and catch-up)
            ("sources", pa.string()),  # comma-separated source names
            ("collection", pa.string()),  # comma-separated when the run's sources wrote several
            ("model_id", pa.string()),  # likewise, in the order of the sources
            ("backend", pa.string()),  # local | modal
            ("device", pa.string()),  # cpu | cuda | the Modal GPU type
            ("gpu_type", pa.string()),  # null on CPU
            ("status", pa.string()),  # completed | failed
            ("error", pa.string()),
            ("started_at", _TS),
            ("finished_at", _TS),
            ("seen", pa.int64()),
            ("indexed", pa.int64()),
            ("unchanged", pa.int64()),
            ("quarantined", pa.int64()),
            ("deleted", pa.int64()),
            ("chunks_embedded", pa.int64()),
            ("points_upserted", pa.int64()),
            ("seconds", pa.float64()),
            ("gpu_seconds", pa.float64()),
            ("discover_seconds", pa.float64()),
            ("load_seconds", pa.float64()),
            ("chunk_seconds", pa.float64()),
            ("diff_seconds", pa.float64()),
            ("embed_seconds", pa.float64()),
            ("upsert_seconds", pa.float64()),
            ("delete_seconds", pa.float64()),
            ("sparse_written", pa.int64()),  # points written with a BM25 sparse vector
            ("sparse_seconds", pa.float64()),
        ]
    ),
    # One row per (run, source, stage, batch): where the time went.
    "ingest_batches": pa.schema(
        _RUN
        + [
            ("source", pa.string()),
            # start (batch_index -1, when the run starts) | discover | load | chunk | diff | embed
            # | upsert | delete | refresh | caption
            ("stage", pa.string()),
            ("batch_index", pa.int64()),
            ("items", pa.int64()),
            ("seconds", pa.float64()),
            ("recorded_at", _TS),
            # On the start row only: the machine and process running the run, so a run with no
            # summary can be told running (that process lives) from killed.
            ("host", pa.string()),
            ("pid", pa.int64()),
        ]
    ),
    # One row per document the run saw (and per document it removed).
    "documents_indexed": pa.schema(
        _RUN
        + [
            ("source", pa.string()),
            ("collection", pa.string()),
            ("doc_id", pa.string()),
            ("outcome", pa.string()),  # indexed | unchanged | quarantined | deleted
            ("modality", pa.string()),
            ("content_hash", pa.string()),
            ("chunk_count", pa.int64()),
            ("bytes", pa.int64()),
            ("recorded_at", _TS),
        ]
    ),
    "quarantine": pa.schema(
        _RUN
        + [
            ("source", pa.string()),
            ("doc_id", pa.string()),
            ("uri", pa.string()),
            ("suite", pa.string()),  # the contract suite, or "load" for unreadable input
            ("expectation", pa.string()),
            ("observed", pa.string()),
            ("reason", pa.string()),
            ("content_hash", pa.string()),
            # What became of the document's indexed version: removed | kept | null (none).
            ("previous_version", pa.string()),
            ("recorded_at", _TS),
        ]
    ),
    "contract_results": pa.schema(
        _RUN
        + [
            ("source", pa.string()),
            ("suite", pa.string()),
            ("expectation", pa.string()),
            ("column", pa.string()),
            ("severity", pa.string()),  # error | fatal
            ("success", pa.bool_()),
            ("element_count", pa.int64()),
            ("unexpected_count", pa.int64()),
            ("recorded_at", _TS),
        ]
    ),
    "prune_runs": pa.schema(
        _RUN
        + [
            ("collection", pa.string()),
            ("expired", pa.int64()),
            ("deleted", pa.int64()),
            ("dry_run", pa.bool_()),
            ("seconds", pa.float64()),
            ("started_at", _TS),
        ]
    ),
    # Points per collection and source after each run that changes the index.
    "index_snapshots": pa.schema(
        _RUN
        + [
            ("collection", pa.string()),
            ("source", pa.string()),
            ("points", pa.int64()),
            ("recorded_at", _TS),
        ]
    ),
    "model_cache_events": pa.schema(
        _RUN
        + [
            ("model_id", pa.string()),
            ("revision", pa.string()),
            ("path", pa.string()),
            ("files_sha256", pa.string()),  # JSON object: file name -> sha256
            ("probe_cosine", pa.float64()),
            ("load_seconds", pa.float64()),
            ("status", pa.string()),  # ok | downloaded | mismatch | missing
            ("message", pa.string()),
            ("recorded_at", _TS),
        ]
    ),
    # One row per (run, source that captions images with a model): captions made, reused from
    # the cache, failed (quarantined), and what the captioner cost.
    "caption_runs": pa.schema(
        _RUN
        + [
            ("source", pa.string()),
            ("captioner", pa.string()),  # the captioner's model id
            ("backend", pa.string()),  # local | modal; null when nothing needed captioning
            ("device", pa.string()),
            ("gpu_type", pa.string()),  # null on CPU
            ("made", pa.int64()),
            ("reused", pa.int64()),
            ("failed", pa.int64()),
            ("seconds", pa.float64()),
            ("gpu_seconds", pa.float64()),
            ("recorded_at", _TS),
        ]
    ),
    "quality_runs": pa.schema(
        _RUN
        + [
            ("dataset", pa.string()),
            ("model_id", pa.string()),
            ("collection", pa.string()),
            ("mode", pa.string()),  # dense | sparse | hybrid (null before modes: dense)
            ("queries", pa.int64()),
            ("ndcg_at_10", pa.float64()),
            ("recall_at_10", pa.float64()),
            ("recall_at_100", pa.float64()),
            ("mrr_at_10", pa.float64()),
            ("seconds", pa.float64()),
            ("status", pa.string()),  # passed | failed
            ("gate_message", pa.string()),
            ("started_at", _TS),
        ]
    ),
    # One row per `tessera backfill-sparse` run: BM25 vectors added to an existing collection.
    "sparse_backfill_runs": pa.schema(
        _RUN
        + [
            ("collection", pa.string()),
            ("status", pa.string()),  # completed | failed
            ("error", pa.string()),
            ("points", pa.int64()),  # points scanned
            ("already_done", pa.int64()),  # had this config's vector already (a resumed run)
            ("updated", pa.int64()),  # given a sparse vector (and the config's signature) now
            ("empty_text", pa.int64()),  # no words in the payload text: marked, no vector
            ("seconds", pa.float64()),
            ("started_at", _TS),
            ("finished_at", _TS),
        ]
    ),
    "quality_query_results": pa.schema(
        _RUN
        + [
            ("dataset", pa.string()),
            ("model_id", pa.string()),
            ("query_id", pa.string()),
            ("mode", pa.string()),  # dense | sparse | hybrid (null before modes: dense)
            ("ndcg_at_10", pa.float64()),
            ("recall_at_10", pa.float64()),
            ("recall_at_100", pa.float64()),
            ("mrr_at_10", pa.float64()),
            ("recorded_at", _TS),
        ]
    ),
    # One row per metric of a paired comparison of two runs over the same queries
    # (tessera.jobs.significance): a migration's live vs shadow, a nightly run vs the last one,
    # a tuning run's current vs chosen settings.
    "quality_comparisons": pa.schema(
        _RUN
        + [
            ("kind", pa.string()),  # migration | nightly | tune
            ("subject", pa.string()),  # the alias migrated, the set scored, the collection tuned
            ("dataset", pa.string()),
            ("mode", pa.string()),  # dense | sparse | hybrid
            ("baseline", pa.string()),  # what it is compared with (a collection, a run id, ...)
            ("candidate", pa.string()),
            ("metric", pa.string()),  # ndcg@10 | recall@10 | recall@100 | mrr@10
            ("queries", pa.int64()),
            ("baseline_mean", pa.float64()),
            ("candidate_mean", pa.float64()),
            ("difference", pa.float64()),  # candidate - baseline
            ("ci_low", pa.float64()),  # 95% bootstrap interval of the difference
            ("ci_high", pa.float64()),
            ("p_value", pa.float64()),  # paired permutation test, two-sided
            ("alpha", pa.float64()),  # quality.significance
            ("power", pa.float64()),  # chance to detect a drop of power_drop with these queries
            ("power_drop", pa.float64()),  # quality.max_drop
            ("queries_needed", pa.int64()),  # for 80% power
            ("significantly_worse", pa.bool_()),
            ("significantly_better", pa.bool_()),
            ("gated", pa.bool_()),  # in quality.gate_metrics
            ("decision", pa.string()),  # switched | refused | passed | failed | kept | applied
            ("recorded_at", _TS),
        ]
    ),
    # One row per `tessera tune` run: the settings chosen on a set's train split and whether
    # they passed the gate on its test split (its comparison is in quality_comparisons).
    "tuning_runs": pa.schema(
        _RUN
        + [
            ("dataset", pa.string()),
            ("collection", pa.string()),  # the collection the settings are written for
            ("mode", pa.string()),
            ("decision", pa.string()),  # applied | kept
            ("reason", pa.string()),
            ("current", pa.string()),  # e.g. "doc_chunks=1, fusion=rrf, rrf_k=60"
            ("chosen", pa.string()),
            ("trials", pa.int64()),  # candidate settings scored on train
            ("train_queries", pa.int64()),
            ("test_queries", pa.int64()),
            ("train_ndcg_at_10_current", pa.float64()),
            ("train_ndcg_at_10_chosen", pa.float64()),
            ("test_ndcg_at_10_current", pa.float64()),
            ("test_ndcg_at_10_chosen", pa.float64()),
            ("p_value", pa.float64()),  # of the test nDCG@10 difference
            ("seconds", pa.float64()),
            ("started_at", _TS),
            ("finished_at", _TS),
        ]
    ),
    # The queries that scored differently in a comparison: one row per query and metric.
    "quality_query_changes": pa.schema(
        _RUN
        + [
            ("kind", pa.string()),
            ("subject", pa.string()),
            ("dataset", pa.string()),
            ("mode", pa.string()),
            ("metric", pa.string()),
            ("query_id", pa.string()),
            ("baseline", pa.float64()),
            ("candidate", pa.float64()),
            ("difference", pa.float64()),
            ("recorded_at", _TS),
        ]
    ),
    # One row per search-service request (HTTP API, MCP, CLI, the page's search box); run_id is
    # the serving process's id.
    # No query text unless api.log_queries = true; never a key.
    "search_requests": pa.schema(
        _RUN
        + [
            ("request_id", pa.string()),
            ("interface", pa.string()),  # http | mcp | cli | page
            ("route", pa.string()),  # the route template, e.g. /v1/search
            ("status", pa.int64()),  # the HTTP status (MCP: 200, or 500 on a tool error)
            ("mode", pa.string()),  # dense | sparse | hybrid | null (the default)
            ("k", pa.int64()),
            ("hits", pa.int64()),
            ("collection", pa.string()),
            ("latency_ms", pa.float64()),
            ("embed_ms", pa.float64()),
            ("engine_ms", pa.float64()),
            ("query", pa.string()),
            # Which key searched: a short hash of it ("key-1a2b3c4d"), "anonymous" without
            # keys, null where no key applies (MCP on stdio, the CLI); never the key itself.
            ("key_id", pa.string()),
            ("recorded_at", _TS),
        ]
    ),
    # Cold start of a serving process (tessera.service.startup): a row when it became ready
    # (seconds since the process started) and one for its first search (that search's time).
    "service_starts": pa.schema(
        _RUN
        + [
            ("interface", pa.string()),  # api | mcp
            ("phase", pa.string()),  # ready | first_search
            ("seconds", pa.float64()),
            ("recorded_at", _TS),
        ]
    ),
    # One row per migration attempt or rollback (`tessera migrate`), switched or not.
    "migrations": pa.schema(
        _RUN
        + [
            ("alias", pa.string()),
            ("decision", pa.string()),  # switched | refused | dry_run | rolled_back | adopted
            ("from_collection", pa.string()),  # what the alias pointed at before
            ("to_collection", pa.string()),  # the shadow (or, for a rollback, the previous one)
            ("from_model", pa.string()),
            ("to_model", pa.string()),
            ("settings_hash", pa.string()),  # the identity tag of to_collection
            ("settings", pa.string()),  # JSON: model, chunking and extra settings of to_collection
            # JSON: {quality set: {metric: {"live": x, "shadow": y}}}
            ("metrics", pa.string()),
            ("live_ndcg_at_10", pa.float64()),  # mean over the quality sets
            ("shadow_ndcg_at_10", pa.float64()),
            ("reason", pa.string()),
            ("started_at", _TS),
            ("finished_at", _TS),
        ]
    ),
}


def new_run_id() -> str:
    """A sortable, unique run id: UTC timestamp plus a random suffix."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock events use)."""
    return datetime.now(UTC)


class EventLog:
    """Buffers one run's events and writes them as new Parquet files; never rewrites a file."""

    def __init__(self, events_dir: Path, run_id: str) -> None:
        self.events_dir = events_dir
        self.run_id = run_id
        self._rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._parts: dict[str, int] = defaultdict(int)

    def add(self, table: str, **row: Any) -> None:
        """Queue one row for `table`; the run id is filled in. Unknown columns are refused: a
        column the schema does not have would be dropped at flush, silently."""
        if table not in SCHEMAS:
            raise KeyError(f"unknown event table {table!r}")
        unknown = sorted(set(row) - set(SCHEMAS[table].names))
        if unknown:
            raise KeyError(f"event table {table!r} has no column {', '.join(map(repr, unknown))}; "
                           "add it to tessera.core.events.SCHEMAS (and the dbt staging model) first")
        row.setdefault("run_id", self.run_id)
        if "trace_id" not in row:
            row["trace_id"], row["span_id"] = current_ids()
        self._rows[table].append(row)

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Rows queued (not yet flushed) for `table`."""
        return list(self._rows.get(table, []))

    def flush(self) -> list[Path]:
        """Write every queued table as a new file (atomically: temp name, then rename)."""
        written = []
        for table, rows in list(self._rows.items()):
            if not rows:
                continue
            schema = SCHEMAS[table]
            columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
            arrow = pa.Table.from_pydict(columns, schema=schema)
            folder = self.events_dir / table
            folder.mkdir(parents=True, exist_ok=True)
            part = self._parts[table]
            self._parts[table] += 1
            final = folder / f"{self.run_id}-{part:03d}.parquet"
            written.append(atomic_write_with(final, partial(pq.write_table, arrow)))
            self._rows[table] = []
        return written


def read_events(events_dir: Path, table: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every row written to `table` so far (only run `run_id`'s, when given), as dicts (files of
    older schemas included)."""
    import glob

    import pyarrow.dataset as ds

    folder = Path(events_dir) / table
    pattern = f"{glob.escape(run_id)}-*.parquet" if run_id else "*.parquet"
    files = sorted(str(p) for p in folder.glob(pattern)) if folder.exists() else []
    if not files:
        return []
    # Files written before a column was added lack it; the current schema fills it with nulls.
    rows: list[dict[str, Any]] = ds.dataset(files, format="parquet", schema=SCHEMAS[table]
                                            ).to_table().to_pylist()
    return rows


def write_empty_tables(events_dir: Path) -> None:
    """Give every table a zero-row file so readers (dbt) see each schema before any run."""
    for table, schema in SCHEMAS.items():
        folder = events_dir / table
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "_schema.parquet"
        if not target.exists():
            atomic_write_with(target, partial(pq.write_table, schema.empty_table()))
