"""The ingest job: for each source, discover -> scan the index -> per batch (load -> check -> diff ->
chunk -> embed -> write -> delete stale -> settle quarantine) -> remove what disappeared -> events.

Plain functions over a `Steps`: the CLI runs them directly, the Prefect flow (flows/ingest.py) as
tasks. The per-batch steps are in tessera/ingest/batch.py.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from models import get_spec
from tessera.core import telemetry
from tessera.core.errors import ConfigError, SourceError, UsageError
from tessera.core.events import utcnow
from tessera.core.fs import writable
from tessera.core.settings import VERSION_MARK, Settings, SourceConfig, parse_ttl
from tessera.core.steps import PlainSteps, Steps
from tessera.ingest.chunking import signature as chunk_signature
from tessera.ingest.context import STAGES, IngestRun, Progress, Target
from tessera.ingest.identity import place
from tessera.ingest.points import expiry
from tessera.ingest.selection import Selection, check_ttl, select_sources
from tessera.ingest.source_pass import ingest_from_state
from tessera.sources import make_source
from tessera.store import VectorStore, open_store
from tessera.store.writers import writer_section

logger = logging.getLogger(__name__)

# Documents per batch (one embed call). Big enough that sorting by length inside the call
# leaves ~1% padding (256 left 3.6% on SciFact; benchmarks/REPORT.md), small enough that a
# crash loses little work.
DOC_BATCH = 1024
# A run's counts, as ingest_runs and its trace's root span carry them.
COUNTS = ("seen", "indexed", "unchanged", "quarantined", "deleted", "chunks_embedded",
          "points_upserted", "sparse_written")
def run_ingest(settings: Settings, steps: Steps | None = None, sources: list[str] | None = None,
               ttl: str | None = None, path: str | None = None, flow: str = "ingest",
               progress: Progress | None = None, run_id: str | None = None,
               verify: bool = False, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Ingest these sources (all declared when None), or PATH; returns the run summary.
    `verify` reads and hashes every file instead of trusting an unchanged stat. `clock` (epoch
    seconds) dates each source's points and their expiry; a test passes a fixed one."""
    check_ttl(ttl)
    selection = select_sources(settings, sources, path)  # refuses a bad request before any work
    if not writable(settings.home):
        raise ConfigError("home", str(settings.home), "this folder is read-only, and ingest "
                          "writes the index and its events there; point TESSERA_HOME (or `home` in "
                          "tessera.toml) at a writable folder, or remount it read-write")
    run = IngestRun(settings, steps or PlainSteps(), ttl, flow, progress, run_id, verify)
    # One trace per run: its sources, batches and steps are spans under this one.
    telemetry.setup(settings.telemetry, role="worker")  # a no-op where the process set it up
    with telemetry.span("ingest run", run_id=run.run_id, flow=flow,
                        sources=",".join(source.name for source, _ in selection)):
        return _run(run, selection, clock)


def _run(run: IngestRun, selection: Selection,
         clock: Callable[[], float]) -> dict[str, Any]:
    """The run's sources, its events written whatever happens; the summary."""
    settings = run.settings
    # Written at once, so even a run killed before its first batch leaves a trace.
    for source, items in selection:
        run.events.add("ingest_batches", source=source.name, stage="start", batch_index=-1,
                       items=len(items) if items is not None else None, seconds=0.0,
                       recorded_at=run.started, host=socket.gethostname(), pid=os.getpid())
    run.events.flush()
    store = open_store(settings)
    status, error = "completed", None
    try:
        # Every source is listed first: the progress bar's total is known before work starts.
        listings = [(source, items, listing(run, source, items)) for source, items in selection]
        run.files_total = sum(len(files) for _, _, files in listings)
        for source, items, files in listings:
            ingest_source(run, store, source, items, files, clock)
    except Exception as exc:
        # A user's input error (a bad config value, a source folder that is gone) is kept apart
        # from a pipeline failure: the marts count them separately.
        failed = "failed_input" if isinstance(exc, ConfigError | UsageError | SourceError) else "failed"
        status, error = failed, f"{type(exc).__name__}: {exc}"
        raise
    finally:
        store.close()
        for section in run.sections:
            section.release()
        record_run(run, status, error)
    return run.summary()


def _target(run: IngestRun, store: VectorStore, source: SourceConfig,
            items: list[str] | None, clock: Callable[[], float]) -> Target:
    """Where a source's points go, with which model, until when; the collection made or checked."""
    settings = run.settings
    declared = settings.collection_for(source)
    spec = get_spec(settings, source.model)
    if source.modality == "image" or source.kind == "images":
        from tessera.sources.images import require_image_model

        require_image_model(spec, source)
    run.captions.prepare(source)  # an unknown captioner or missing weights: refused now
    if VERSION_MARK not in declared:
        # Shared with other ingests; a migration switching this alias waits for it (and it for
        # the switch), so it writes the collection the alias points at when it starts.
        run.sections.append(writer_section(settings, declared, exclusive=False))
    placed = place(store, settings, declared, spec)
    spec, cfg = placed.spec, placed.chunking
    ttl = parse_ttl(run.ttl) if run.ttl is not None else source.ttl_seconds
    now = int(clock())
    return Target(source=source, items=items, collection=placed.collection, spec=spec,
                  chunking=chunk_signature(spec.max_length, cfg.max_tokens, cfg.overlap),
                  now=now, expires_at=expiry(now, ttl), chunk_config=cfg,
                  sparse=placed.info.sparse)


def listing(run: IngestRun, source: SourceConfig, items: list[str] | None) -> list[str]:
    """The files of a source this run reads: `items` when given, else the source's listing."""
    if items is not None:
        return items
    return run.timed(source.name, "discover", 0, "discover",
                     lambda: make_source(source).discover(), io=True)


def ingest_source(run: IngestRun, store: VectorStore, source: SourceConfig,
                  items: list[str] | None, files: list[str],
                  clock: Callable[[], float] = time.time) -> None:
    """One source's `files`: every batch, then removal of the documents that disappeared from
    it (when `items` is None, i.e. `files` is its whole listing)."""
    with telemetry.span("source", source=source.name, files=len(files)):
        target = _target(run, store, source, items, clock)
        run.targets.append(target)
        telemetry.set_attributes(collection=target.collection, model=target.spec.name)
        ingest_from_state(run, store, target, files, DOC_BATCH)


def record_run(run: IngestRun, status: str, error: str | None) -> None:
    """The run's summary event, every queued event flushed, and the summary report."""
    backends = list(run._backends.values())
    stats = backends[0].stats if backends else None
    secs = run.counts.stage_seconds
    summary = run.summary()
    telemetry.set_attributes(status=status, **{k: summary[k] for k in COUNTS})
    if error:
        telemetry.mark_error(status, error)
    run.captions.record(run.events)
    run.events.add(
        "ingest_runs", flow=run.flow, sources=",".join(t.source.name for t in run.targets),
        collection=",".join(dict.fromkeys(t.collection for t in run.targets)),
        model_id=",".join(dict.fromkeys(t.spec.id for t in run.targets)),
        backend=stats.backend if stats else "local", device=stats.device if stats else None,
        gpu_type=stats.gpu_type if stats else None, status=status, error=error,
        started_at=run.started, finished_at=utcnow(),
        **{k: summary[k] for k in (*COUNTS, "seconds")},
        gpu_seconds=sum(b.stats.gpu_seconds for b in backends),
        **{f"{s}_seconds": secs.get(s, 0.0) for s in STAGES},
    )
    run.events.flush()
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    md = f"## Ingest run `{summary['run_id']}`: {status}\n\n| field | value |\n|---|---|\n{rows}\n"
    if error:
        md += f"\n**Error:** {error}\n"
    run.steps.report("ingest-summary", md, "ingest run summary")

