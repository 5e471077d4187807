"""Ingest flow: discover -> load -> check -> diff -> chunk -> embed -> upsert -> delete stale -> events."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from data_contracts import ContractRunner, warm_up
from flows.chunking import Chunker
from flows.chunking import signature as chunk_signature
from flows.indexer import Existing, RunCounts, build_points, expiry, read_existing, stale_ids
from flows.sources import make_source
from flows.store import VectorStore, ensure_collection, open_store, resolve
from models import EmbeddingBackend, get_spec, make_backend, resolve_model_path
from models.base import EmbedsTokenIds
from models.registry import ModelSpec
from tessera.errors import (
    ConfigError,
    ContractViolation,
    ModelMismatchError,
    RecordError,
    StoreLockedError,
)
from tessera.events import EventLog, new_run_id, utcnow
from tessera.settings import Settings, SourceConfig, load_settings, parse_ttl
from tessera.types import Chunk, CollectionInfo, Document, Loaded, Match, Quarantined

# Errors a retry cannot fix: bad config, the wrong model, a lock already waited for.
_PERMANENT = (ConfigError, ModelMismatchError, StoreLockedError, ContractViolation, RecordError)


def _is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry I/O hiccups only."""
    return not isinstance(state.result(raise_on_failure=False), _PERMANENT)


IO_RETRY: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 15],
                            "retry_condition_fn": _is_transient}
# Documents per batch (one embed call). Big enough that sorting by length inside the call
# leaves ~1% padding (256 left 3.6% on SciFact; benchmarks/REPORT.md), small enough that a
# crash loses little work.
DOC_BATCH = 1024

T = TypeVar("T")


def _as_is(value: T) -> T:
    """Hand a big list to a task without Prefect walking every element for futures (`quote`):
    that walk ran twice per call and cost 0.76 s for one batch's 1,846 chunk texts. The task
    receives the value unchanged."""
    return cast(T, quote(value))


# The CLI sets this to drive a progress bar: called with (documents done, documents known).
progress_hook: Callable[[int, int], None] | None = None


@task(**IO_RETRY)
def discover(source: SourceConfig) -> list[str]:
    """List the source's items (files)."""
    return make_source(source).discover()


@task(**IO_RETRY)
def load(source: SourceConfig, items: list[str]) -> list[Loaded]:
    """Read items into documents, quarantining unreadable records."""
    return list(make_source(source).load(items))


@task(cache_policy=NO_CACHE, **IO_RETRY)
def scan_index(store: VectorStore, collection: str, source: str) -> dict[str, Existing]:
    """What the collection holds for this source, by document."""
    return read_existing(store, collection, source)


@task(cache_policy=NO_CACHE)
def embed(backend: EmbeddingBackend, texts: list[str], images: list[bytes],
          token_ids: list[tuple[int, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed one batch of chunk texts (from the chunker's token ids when the backend takes them)
    and images."""
    if token_ids is not None and isinstance(backend, EmbedsTokenIds):
        text_vecs = backend.embed_token_ids(token_ids)
    else:
        text_vecs = backend.embed_texts(texts)
    return text_vecs, (backend.embed_images(images) if images else
                       np.zeros((0, backend.spec.dimension), np.float32))


@task(cache_policy=NO_CACHE, **IO_RETRY)
def upsert(store: VectorStore, collection: str, points: list[Any]) -> int:
    """Write one batch of points (idempotent: ids are derived, so a retry rewrites the same)."""
    store.upsert(collection, points)
    return len(points)


@task(cache_policy=NO_CACHE, **IO_RETRY)
def delete_points(store: VectorStore, collection: str, ids: list[str]) -> int:
    """Delete stale or removed points by id."""
    store.delete(collection, ids)
    return len(ids)


@task(cache_policy=NO_CACHE, **IO_RETRY)
def refresh_expiry(store: VectorStore, collection: str, ids: list[str], expires_at: int) -> int:
    """Extend unchanged documents' points: a payload update, no embedding."""
    store.set_payload(collection, ids, {"expires_at": expires_at})
    return len(ids)


@task
def write_events(events: EventLog) -> int:
    """Append this run's events as new Parquet files."""
    return len(events.flush())


class _Run:
    """State of one ingest run across sources (kept off the flow so the flow stays thin)."""

    def __init__(self, settings: Settings, ttl: str | None) -> None:
        self.settings = settings
        self.ttl_override = ttl
        self.run_id = new_run_id()
        self.events = EventLog(settings.events_dir, self.run_id)
        self.spec: ModelSpec = get_spec(settings)
        self.contracts = ContractRunner(settings, self.spec, self.events)
        warm_up()  # GE imports in the background while the first batch is read
        self.use_model(self.spec)
        self.counts = RunCounts()
        self.started = utcnow()
        self._backends: dict[str, EmbeddingBackend] = {}
        self._chunkers: dict[str, Chunker] = {}
        self.batch_index = 0
        self.done = 0
        self.collection = ""
        self.source_names: list[str] = []
        self.flow = "ingest"  # or "quality" when the quality flow indexes its corpus

    def use_model(self, spec: ModelSpec) -> None:
        """Switch to the model of the next source (a source may name its own model)."""
        self.spec = spec
        self.contracts.spec = spec
        cfg = self.settings.chunking
        self.chunking = chunk_signature(spec.max_length, cfg.max_tokens, cfg.overlap)

    @property
    def backend(self) -> EmbeddingBackend:
        """The current model's backend, made (and its weights loaded) on first use."""
        if self.spec.name not in self._backends:
            self._backends[self.spec.name] = make_backend(self.settings, self.spec)
        return self._backends[self.spec.name]

    @property
    def chunker(self) -> Chunker:
        """The current model's tokenizer-based chunker."""
        if self.spec.name not in self._chunkers:
            model_dir = resolve_model_path(self.spec, self.settings.model_cache_dir)
            self._chunkers[self.spec.name] = Chunker(
                model_dir, self.spec.max_length, self.settings.chunking.max_tokens,
                self.settings.chunking.overlap)
        return self._chunkers[self.spec.name]

    def token_ids(self, chunks: list[Chunk]) -> list[tuple[int, ...]] | None:
        """The chunks' token ids, when the backend takes ids made by the chunker's tokenizer."""
        backend = self.backend
        if (isinstance(backend, EmbedsTokenIds) and Path(backend.path) == self.chunker.tokenizer_dir
                and all(c.ids for c in chunks)):
            return [c.ids for c in chunks]
        return None

    @contextmanager
    def stage(self, source: str, name: str, items: int) -> Iterator[None]:
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.counts.add_time(name, seconds)
        self.events.add("ingest_batches", source=source, stage=name, batch_index=self.batch_index,
                        items=items, seconds=seconds, recorded_at=utcnow())

    def quarantine(self, rows: list[Quarantined]) -> None:
        now = utcnow()
        for q in rows:
            self.events.add("quarantine", source=q.source, doc_id=q.doc_id, uri=q.uri, suite=q.suite,
                            expectation=q.expectation, observed=q.observed, reason=q.reason,
                            content_hash=q.content_hash, recorded_at=now)
            self.outcome(q.source, q.doc_id, "quarantined", content_hash=q.content_hash)
        self.counts.quarantined += len(rows)

    def outcome(self, source: str, doc_id: str, outcome: str, **extra: Any) -> None:
        self.events.add("documents_indexed", source=source, collection=self.collection,
                        doc_id=doc_id, outcome=outcome, recorded_at=utcnow(), **extra)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {"run_id": self.run_id, "seen": c.seen, "indexed": c.indexed, "unchanged": c.unchanged,
                "quarantined": c.quarantined, "deleted": c.deleted,
                "chunks_embedded": c.chunks_embedded, "points_upserted": c.points_upserted,
                "seconds": round((utcnow() - self.started).total_seconds(), 3)}


def _process_batch(run: _Run, store: VectorStore, source: SourceConfig, loaded: list[Loaded],
                   existing: dict[str, Existing], now: int, expires_at: int) -> None:
    """Check, diff, embed and write one batch of loaded records."""
    coll = run.collection
    docs = [x for x in loaded if isinstance(x, Document)]
    run.counts.seen += len(loaded)
    run.quarantine([x for x in loaded if isinstance(x, Quarantined)])
    try:
        docs, bad = run.contracts.check_documents(docs, source)
        run.quarantine(bad)

        changed, unchanged_ids = [], []
        for doc in docs:
            old = existing.get(doc.doc_id)
            if old is not None and old.is_current(doc.content_hash, run.spec.id, run.chunking):
                unchanged_ids.extend(old.ids)
                run.counts.unchanged += 1
                run.outcome(source.name, doc.doc_id, "unchanged", modality=doc.modality,
                            content_hash=doc.content_hash, chunk_count=len(old.ids),
                            bytes=doc.size_bytes)
            else:
                changed.append(doc)
        if unchanged_ids:
            with run.stage(source.name, "refresh", len(unchanged_ids)):
                refresh_expiry(store, coll, _as_is(unchanged_ids), expires_at)
        if not changed:
            return

        with run.stage(source.name, "chunk", len(changed)):
            chunks = run.chunker.chunk(changed)
            changed, bad = run.contracts.check_chunks(changed, chunks, source)
            run.quarantine(bad)
        text_chunks = [c for d in changed if d.modality == "text" for c in chunks[d.doc_id]]
        texts = [c.text for c in text_chunks]
        images = [d.data or b"" for d in changed if d.modality == "image"]
        token_ids = run.token_ids(text_chunks)
        with run.stage(source.name, "embed", len(texts) + len(images)):
            text_vecs, image_vecs = embed(run.backend, _as_is(texts), _as_is(images),
                                          _as_is(token_ids))
        vectors: dict[str, np.ndarray] = {}
        t = i = 0
        for doc in changed:
            if doc.modality == "image":
                vectors[doc.doc_id] = image_vecs[i:i + 1]
                i += 1
            else:
                n = len(chunks[doc.doc_id])
                vectors[doc.doc_id] = text_vecs[t:t + n]
                t += n
        run.counts.chunks_embedded += len(texts) + len(images)
        changed, bad = run.contracts.check_embeddings(changed, vectors, chunks, source)
        run.quarantine(bad)

        doc_points = {doc.doc_id: build_points(coll, doc, chunks[doc.doc_id], vectors[doc.doc_id],
                                               run.spec.id, now, expires_at, run.chunking)
                      for doc in changed}
        # The last check before the write: a document fails here as a whole, never half-written.
        changed, bad = run.contracts.check_payloads(changed, doc_points, source)
        run.quarantine(bad)
        points, stale = [], []
        for doc in changed:
            mine = doc_points[doc.doc_id]
            points.extend(mine)
            stale.extend(stale_ids(existing.get(doc.doc_id), {p.id for p in mine}))
            run.outcome(source.name, doc.doc_id, "indexed", modality=doc.modality,
                        content_hash=doc.content_hash, chunk_count=len(mine), bytes=doc.size_bytes)
        run.counts.indexed += len(changed)
        size = run.settings.store.upsert_batch
        with run.stage(source.name, "upsert", len(points)):
            for start in range(0, len(points), size):
                run.counts.points_upserted += upsert(store, coll, _as_is(points[start:start + size]))
        # Write, then delete: stale chunks go only after the new ones are in.
        if stale:
            with run.stage(source.name, "delete", len(stale)):
                delete_points(store, coll, _as_is(stale))
    finally:
        # Every suite run of this batch, failed or not, as one artifact on the flow run.
        run.contracts.publish(source.name, run.batch_index)


def _ingest_source(run: _Run, store: VectorStore, source: SourceConfig, items: list[str] | None) -> None:
    """One source: every batch, then removal of documents that disappeared from it."""
    run.collection = resolve(store, run.settings.collection_for(source))
    run.use_model(get_spec(run.settings, source.model))
    if source.modality == "image" or source.kind == "images":
        from flows.sources.images import require_image_model

        require_image_model(run.spec, source)
    ensure_collection(store, CollectionInfo.for_model(run.collection, run.spec))
    full_listing = items is None
    with run.stage(source.name, "discover", 0):
        items = discover(source) if items is None else items
    with run.stage(source.name, "diff", 0):
        existing = scan_index(store, run.collection, source.name)
    ttl = parse_ttl(run.ttl_override) if run.ttl_override is not None else source.ttl_seconds
    now = int(time.time())
    expires_at = expiry(now, ttl)
    seen_ids: set[str] = set()
    for start in range(0, len(items), DOC_BATCH):
        with run.stage(source.name, "load", len(items[start:start + DOC_BATCH])):
            loaded = load(source, _as_is(items[start:start + DOC_BATCH]))
        for offset in range(0, len(loaded), DOC_BATCH):
            batch = loaded[offset:offset + DOC_BATCH]
            seen_ids.update(x.doc_id for x in batch)
            _process_batch(run, store, source, batch, existing, now, expires_at)
            run.batch_index += 1
            run.done += len(batch)
            if progress_hook:
                progress_hook(run.done, max(run.done, len(items)))
    if full_listing and source.delete_missing:
        gone = sorted(set(existing) - seen_ids)
        ids = [pid for doc_id in gone for pid in existing[doc_id].ids]
        if ids:
            with run.stage(source.name, "delete", len(ids)):
                delete_points(store, run.collection, _as_is(ids))
        for doc_id in gone:
            run.outcome(source.name, doc_id, "deleted", chunk_count=len(existing[doc_id].ids))
        run.counts.deleted += len(gone)
    run.events.add("index_snapshots", collection=run.collection, source=source.name,
                   points=store.count(run.collection, Match(source=source.name)), recorded_at=utcnow())


def _select_sources(settings: Settings, names: list[str] | None, path: str | None) -> list[tuple[SourceConfig, list[str] | None]]:
    """The sources to run and, for an ad-hoc PATH, the items to load from it."""
    if path is not None:
        target = Path(path).resolve()
        if names:
            src = settings.source(names[0])
        else:
            src = SourceConfig(name=target.stem if target.is_file() else target.name,
                               path=target.parent if target.is_file() else target)
        if target.is_file():
            src = src.model_copy(update={"path": target.parent})
            return [(src, [target.name])]
        return [(src.model_copy(update={"path": target}), None)]
    chosen = [settings.source(n) for n in names] if names else list(settings.sources)
    if not chosen:
        raise ConfigError("sources", [], "no sources declared; add a [[sources]] table or pass PATH")
    return [(s, None) for s in chosen]


def run_ingest(settings: Settings, sources: list[str] | None = None, ttl: str | None = None,
               path: str | None = None, flow: str = "ingest") -> dict[str, Any]:
    """Run the ingest for these sources (all when None); returns the run summary."""
    run = _Run(settings, ttl)
    run.flow = flow
    store = open_store(settings)
    status, error = "completed", None
    try:
        for source, items in _select_sources(settings, sources, path):
            run.source_names.append(source.name)
            _ingest_source(run, store, source, items)
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        store.close()
        _record_run(run, status, error)
    return run.summary()


def _record_run(run: _Run, status: str, error: str | None) -> None:
    backends = list(run._backends.values())
    stats = backends[0].stats if backends else None
    secs = run.counts.stage_seconds
    summary = run.summary()
    run.events.add(
        "ingest_runs", flow=run.flow, sources=",".join(run.source_names),
        collection=run.collection, model_id=run.spec.id,
        backend=stats.backend if stats else "local", device=stats.device if stats else None,
        gpu_type=stats.gpu_type if stats else None, status=status, error=error,
        started_at=run.started, finished_at=utcnow(),
        **{k: summary[k] for k in ("seen", "indexed", "unchanged", "quarantined", "deleted",
                                   "chunks_embedded", "points_upserted", "seconds")},
        gpu_seconds=sum(b.stats.gpu_seconds for b in backends),
        **{f"{s}_seconds": secs.get(s, 0.0) for s in
           ("discover", "load", "chunk", "diff", "embed", "upsert", "delete")},
    )
    write_events(run.events)
    _artifact(summary, status, error)


def _artifact(summary: dict[str, Any], status: str, error: str | None) -> None:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    md = f"## Ingest run `{summary['run_id']}`: {status}\n\n| field | value |\n|---|---|\n{rows}\n"
    if error:
        md += f"\n**Error:** {error}\n"
    create_markdown_artifact(key="ingest-summary", markdown=md, description="ingest run summary")


@flow(name="ingest", log_prints=True)
def ingest_flow(config: str | None = None, sources: list[str] | None = None,
                ttl: str | None = None, path: str | None = None) -> dict[str, Any]:
    """Index new and changed documents of the given sources (default: all declared)."""
    settings = load_settings(config)
    summary = run_ingest(settings, sources, ttl, path)
    get_run_logger().info("ingest %s", summary)
    if settings.marts.build_after_ingest:
        from flows.marts import build_marts_task

        build_marts_task(settings)
    return summary
