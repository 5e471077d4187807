"""The ingest job: for each source, discover -> scan the index -> per batch (load -> check -> diff ->
chunk -> embed -> write -> delete stale -> settle quarantine) -> remove what disappeared -> events.

Plain functions over a `Steps`: the CLI runs them directly, the Prefect flow (flows/ingest.py) as
tasks. The per-batch steps are in flows/pipeline/batch.py.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from data_contracts import ContractRunner
from flows.pipeline.batch import Target
from flows.pipeline.captions import RunCaptions
from flows.pipeline.chunking import Chunker
from flows.pipeline.chunking import signature as chunk_signature
from flows.pipeline.diff import ingest_from_state
from flows.pipeline.identity import place
from flows.pipeline.indexer import RunCounts, expiry
from flows.pipeline.selection import check_ttl, select_sources
from flows.pipeline.sources import make_source
from flows.pipeline.store import VectorStore, open_store
from flows.pipeline.store.writers import WriterSection, writer_section
from models import EmbeddingBackend, get_spec, make_backend, resolve_model_path
from models.registry import ModelSpec
from tessera.errors import ConfigError, SourceError, UsageError
from tessera.events import EventLog, new_run_id, utcnow
from tessera.fs import writable
from tessera.settings import VERSION_MARK, ChunkingConfig, Settings, SourceConfig, parse_ttl
from tessera.sparse import Bm25Encoder, config_from_identity, sparse_signature
from tessera.steps import PlainSteps, Steps

logger = logging.getLogger(__name__)

# Documents per batch (one embed call). Big enough that sorting by length inside the call
# leaves ~1% padding (256 left 3.6% on SciFact; benchmarks/REPORT.md), small enough that a
# crash loses little work.
DOC_BATCH = 1024
# Called with (documents done, documents expected, chunks embedded): after each batch, and
# inside a batch's embed step after every model call of the token-id path (batch.PROGRESS_CHUNKS:
# every 64 documents or fewer at the default batch size), so a bar drawn from it moves while a
# 1,024-document batch is embedded.
Progress = Callable[[int, int, int], None]
STAGES = ("discover", "load", "chunk", "diff", "embed", "sparse", "upsert", "delete")


class IngestRun:
    """What one run carries across its sources: events, counts, contracts, loaded models."""

    def __init__(self, settings: Settings, steps: Steps, ttl: str | None, flow: str,
                 progress: Progress | None, run_id: str | None = None,
                 verify: bool = False) -> None:
        self.settings = settings
        self.steps = steps
        self.ttl = ttl
        self.flow = flow  # "ingest", or "quality" when the quality flow indexes its corpus
        self.progress = progress
        self.run_id = run_id or new_run_id()
        self.events = EventLog(settings.events_dir, self.run_id)
        self.contracts = ContractRunner(settings, self.events, steps)
        self.counts = RunCounts()
        self.started = utcnow()
        self.targets: list[Target] = []
        self.batch_index = 0
        self.done = 0  # documents of finished batches
        self.expected = 0  # documents the run is expected to see (from the listings so far)
        self._backends: dict[str, EmbeddingBackend] = {}
        self._chunkers: dict[tuple[str, int | None, int], Chunker] = {}
        self.sections: list[WriterSection] = []  # writer sections of the aliases it writes
        self.captions = RunCaptions(settings)
        self._bm25: dict[str, Bm25Encoder] = {}
        self.verify = verify  # read and hash every file, trusting no recorded stat
        self.state_rebuilt: list[str] = []  # "source: why" for each diff state rebuilt
        self._outcomes: list[tuple[str, str, str | None, int | None]] = []

    def bm25(self, identity: dict[str, Any]) -> Bm25Encoder:
        """The BM25 encoder for a collection's recorded sparse config."""
        key = sparse_signature(identity)
        if key not in self._bm25:
            self._bm25[key] = Bm25Encoder(config_from_identity(identity))
        return self._bm25[key]

    def backend(self, spec: ModelSpec, pending_chunks: int) -> EmbeddingBackend:
        """The model's backend, chosen (local or Modal, for `auto`) when it is first needed."""
        if spec.name not in self._backends:
            self._backends[spec.name] = make_backend(self.settings, spec, pending_chunks)
        return self._backends[spec.name]

    def chunker(self, spec: ModelSpec, cfg: ChunkingConfig | None = None) -> Chunker:
        """The model's tokenizer-based chunker, with these chunking settings (default: config)."""
        cfg = cfg or self.settings.chunking
        key = (spec.name, cfg.max_tokens, cfg.overlap)
        if key not in self._chunkers:
            model_dir = resolve_model_path(spec, self.settings.model_cache_dir)
            self._chunkers[key] = Chunker(model_dir, spec.max_length, cfg.max_tokens, cfg.overlap)
        return self._chunkers[key]

    def report(self, docs_in_batch: int = 0, chunks_in_batch: int = 0) -> None:
        """Tell the progress callback where the run is: finished batches plus this much of the
        batch in hand (documents estimated, chunks exact)."""
        if self.progress is None:
            return
        done = self.done + docs_in_batch
        self.progress(done, max(done, self.expected), self.counts.chunks_embedded + chunks_in_batch)

    def stage_done(self, source: str, stage: str, items: int, seconds: float) -> None:
        """Account for one stage of one batch."""
        self.counts.add_time(stage, seconds)
        self.events.add("ingest_batches", source=source, stage=stage, batch_index=self.batch_index,
                        items=items, seconds=seconds, recorded_at=utcnow())

    def timed(self, source: str, stage: str, items: int, name: str, fn: Callable[..., Any],
              *args: Any, io: bool = False) -> Any:
        """Run one step and record the time its stage took."""
        start = time.perf_counter()
        try:
            return self.steps.run(name, fn, *args, io=io)
        finally:
            self.stage_done(source, stage, items, time.perf_counter() - start)

    def outcome(self, target: Target, doc_id: str, outcome: str, **extra: Any) -> None:
        """One `documents_indexed` row: what became of a document."""
        self.events.add("documents_indexed", source=target.source.name,
                        collection=target.collection, doc_id=doc_id, outcome=outcome,
                        recorded_at=utcnow(), **extra)
        self._outcomes.append((doc_id, outcome, extra.get("content_hash"),
                               extra.get("chunk_count")))

    def take_outcomes(self) -> list[tuple[str, str, str | None, int | None]]:
        """(doc id, outcome, content hash, chunk count) recorded since the last call."""
        out, self._outcomes = self._outcomes, []
        return out

    def summary(self) -> dict[str, Any]:
        """The run's counts, as `tessera ingest --json` prints them."""
        c = self.counts
        out = {"run_id": self.run_id, "seen": c.seen, "indexed": c.indexed,
               "unchanged": c.unchanged, "quarantined": c.quarantined, "deleted": c.deleted,
               "chunks_embedded": c.chunks_embedded, "points_upserted": c.points_upserted,
               "sparse_written": c.sparse_written,
               "seconds": round((utcnow() - self.started).total_seconds(), 3),
               "diff_state_rebuilt": list(self.state_rebuilt)}
        if self.captions.sources:  # only runs with a source that captions with a model
            out |= self.captions.summary()
        return out


def run_ingest(settings: Settings, steps: Steps | None = None, sources: list[str] | None = None,
               ttl: str | None = None, path: str | None = None, flow: str = "ingest",
               progress: Progress | None = None, run_id: str | None = None,
               verify: bool = False) -> dict[str, Any]:
    """Ingest these sources (all declared when None), or PATH; returns the run summary.
    `verify` reads and hashes every file instead of trusting an unchanged stat."""
    check_ttl(ttl)
    selection = select_sources(settings, sources, path)  # refuses a bad request before any work
    if not writable(settings.home):
        raise ConfigError("home", str(settings.home), "this folder is read-only, and ingest "
                          "writes the index and its events there; point TESSERA_HOME (or `home` in "
                          "tessera.toml) at a writable folder, or remount it read-write")
    run = IngestRun(settings, steps or PlainSteps(), ttl, flow, progress, run_id, verify)
    # Written at once, so even a run killed before its first batch leaves a trace.
    for source, items in selection:
        run.events.add("ingest_batches", source=source.name, stage="start", batch_index=-1,
                       items=len(items) if items is not None else None, seconds=0.0,
                       recorded_at=run.started, host=socket.gethostname(), pid=os.getpid())
    run.events.flush()
    store = open_store(settings)
    status, error = "completed", None
    try:
        for source, items in selection:
            ingest_source(run, store, source, items)
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
            items: list[str] | None) -> Target:
    """Where a source's points go, with which model, until when; the collection made or checked."""
    settings = run.settings
    declared = settings.collection_for(source)
    spec = get_spec(settings, source.model)
    if source.modality == "image" or source.kind == "images":
        from flows.pipeline.sources.images import require_image_model

        require_image_model(spec, source)
    run.captions.prepare(source)  # an unknown captioner or missing weights: refused now
    if VERSION_MARK not in declared:
        # Shared with other ingests; a migration switching this alias waits for it (and it for
        # the switch), so it writes the collection the alias points at when it starts.
        run.sections.append(writer_section(settings, declared, exclusive=False))
    placed = place(store, settings, declared, spec)
    spec, cfg = placed.spec, placed.chunking
    ttl = parse_ttl(run.ttl) if run.ttl is not None else source.ttl_seconds
    now = int(time.time())
    return Target(source=source, items=items, collection=placed.collection, spec=spec,
                  chunking=chunk_signature(spec.max_length, cfg.max_tokens, cfg.overlap),
                  now=now, expires_at=expiry(now, ttl), chunk_config=cfg,
                  sparse=placed.info.sparse)


def ingest_source(run: IngestRun, store: VectorStore, source: SourceConfig,
                  items: list[str] | None) -> None:
    """One source: every batch, then removal of the documents that disappeared from it."""
    target = _target(run, store, source, items)
    run.targets.append(target)
    listing = items if items is not None else run.timed(
        source.name, "discover", 0, "discover", lambda: make_source(source).discover(), io=True)
    ingest_from_state(run, store, target, listing, DOC_BATCH)


def record_run(run: IngestRun, status: str, error: str | None) -> None:
    """The run's summary event, every queued event flushed, and the summary report."""
    backends = list(run._backends.values())
    stats = backends[0].stats if backends else None
    secs = run.counts.stage_seconds
    summary = run.summary()
    run.captions.record(run)
    run.events.add(
        "ingest_runs", flow=run.flow, sources=",".join(t.source.name for t in run.targets),
        collection=",".join(dict.fromkeys(t.collection for t in run.targets)),
        model_id=",".join(dict.fromkeys(t.spec.id for t in run.targets)),
        backend=stats.backend if stats else "local", device=stats.device if stats else None,
        gpu_type=stats.gpu_type if stats else None, status=status, error=error,
        started_at=run.started, finished_at=utcnow(),
        **{k: summary[k] for k in ("seen", "indexed", "unchanged", "quarantined", "deleted",
                                   "chunks_embedded", "points_upserted", "sparse_written",
                                   "seconds")},
        gpu_seconds=sum(b.stats.gpu_seconds for b in backends),
        **{f"{s}_seconds": secs.get(s, 0.0) for s in STAGES},
    )
    run.events.flush()
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    md = f"## Ingest run `{summary['run_id']}`: {status}\n\n| field | value |\n|---|---|\n{rows}\n"
    if error:
        md += f"\n**Error:** {error}\n"
    run.steps.report("ingest-summary", md, "ingest run summary")

