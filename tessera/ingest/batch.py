"""One batch of an ingest, as steps a reader can name:

check documents -> split off the unchanged (refresh their expiry) -> chunk (check chunks) -> embed
(check vectors) -> build points (check payloads) -> write, then delete stale chunks -> settle the
quarantine (what becomes of an invalid document's indexed version) -> the batch's result (each
document's outcome, and the work done), which the source pass adds to the run.

Write, then delete: a changed document's new chunks are upserted before its stale ones go, so a
crash in between leaves old + new, never nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import EmbedsTokenIds
from models.registry import ModelSpec
from tessera.core.events import utcnow
from tessera.core.settings import ChunkingConfig
from tessera.core.sparse import SparseVec
from tessera.core.types import Chunk, Document, Loaded, PointRecord, Quarantined
from tessera.ingest import captions
from tessera.ingest.context import Batch, BatchResult, Outcome
from tessera.ingest.points import build_points, stale_ids
from tessera.ingest.unchanged import document_unchanged, refresh_expiry
from tessera.store import VectorStore

if TYPE_CHECKING:
    from tessera.ingest.context import IngestRun

# Chunks per model call on the token-id path, rounded up to a whole number of the backend's own
# batches: the progress bar moves at least this often, i.e. at least every 64 documents (a
# document has >= 1 chunk) while `embedding.batch_size` <= 64, every backend batch above that.
PROGRESS_CHUNKS = 64


def process_batch(run: IngestRun, store: VectorStore, batch: Batch,
                  loaded: list[Loaded]) -> BatchResult:
    """Check, diff, embed and write one batch of loaded records; returns what became of them
    (the source pass adds it to the run). The caller makes `batch`, so that a batch that raises
    still shows what it got done."""
    target = batch.target
    batch.records = len(loaded)
    batch.quarantined += [x for x in loaded if isinstance(x, Quarantined)]
    wrote = False
    try:
        docs = _check(run, batch, run.contracts.check_documents,
                      [x for x in loaded if isinstance(x, Document)], target.spec, target.source)
        docs = captions.stamp(run, batch, docs)
        changed = split_unchanged(run, store, batch, docs)
        changed = captions.caption(run, batch, changed)
        if changed:
            chunks = chunk(run, batch, changed)
            changed = [d for d in changed if d.doc_id in chunks]
            vectors = embed(run, batch, changed, chunks)
            points = make_points(run, batch, changed, chunks, vectors)
            write(run, store, batch, points)
        wrote = True
    finally:
        settle_quarantine(run, store, batch, apply=wrote)
        run.contracts.publish(batch.name, run.batch_index)  # every suite run, as one report
    return batch.result()


def _check(run: IngestRun, batch: Batch, check: Any, docs: list[Document],
           *args: Any) -> list[Document]:
    kept, bad = check(docs, *args)
    batch.quarantined += bad
    return list(kept)


def split_unchanged(run: IngestRun, store: VectorStore, batch: Batch,
                    docs: list[Document]) -> list[Document]:
    """The documents to embed; the unchanged ones only get their expiry refreshed (where it
    moved)."""
    t = batch.target
    changed, unchanged_ids = [], []
    for doc in docs:
        old = batch.existing.get(doc.doc_id)
        if old is not None and document_unchanged(old, doc.content_hash, t.spec.id, t.chunking,
                                                  t.sparse_signature):
            if not old.already_expires_at(t.expires_at):
                unchanged_ids.extend(old.ids)
            batch.outcomes.append(Outcome(doc.doc_id, "unchanged", doc.content_hash,
                                          len(old.ids), doc.modality, doc.size_bytes))
        else:
            changed.append(doc)
    refresh_expiry(run, store, t, unchanged_ids)
    return changed


def chunk(run: IngestRun, batch: Batch, docs: list[Document]) -> dict[str, list[Chunk]]:
    """Token windows of each changed document (checked by the chunks contract)."""
    t = batch.target
    chunker = run.chunker(t.spec, t.chunk_config)
    chunks = run.timed(batch.name, "chunk", len(docs), "chunk", chunker.chunk, docs)
    kept = _check(run, batch, run.contracts.check_chunks, docs, chunks, t.spec, t.source)
    return {d.doc_id: chunks[d.doc_id] for d in kept}


def embed(run: IngestRun, batch: Batch, docs: list[Document],
          chunks: dict[str, list[Chunk]]) -> dict[str, np.ndarray]:
    """Vectors for each document's chunks (an image is one vector), checked by the contract."""
    t = batch.target
    # A text-only model embeds an image as its caption's text (options.caption = "model").
    as_text = "image" not in t.spec.modalities
    text_chunks = [c for d in docs if d.modality == "text" or as_text for c in chunks[d.doc_id]]
    images = [d.data or b"" for d in docs if d.modality == "image" and not as_text]
    pending = len(text_chunks) + len(images)
    backend = run.backend(t.spec, int(pending * batch.remaining))
    ids = token_ids(run, backend, t.spec, text_chunks, t.chunk_config)
    # The batch's records not embedded (unchanged, quarantined) are done already; the rest move
    # with the chunks embedded (an estimate: chunks are embedded longest first, not by document).
    before = batch.records - len(docs)

    def tick(chunks_done: int) -> None:
        run.report(before + len(docs) * chunks_done // max(pending, 1), chunks_done)

    text_vecs, image_vecs = run.timed(batch.name, "embed", pending, "embed", _embed, backend,
                                      [c.text for c in text_chunks], images, ids, tick)
    batch.chunks_embedded += pending
    vectors: dict[str, np.ndarray] = {}
    at_text = at_image = 0
    for doc in docs:
        if doc.modality == "image" and not as_text:
            vectors[doc.doc_id] = image_vecs[at_image:at_image + 1]
            at_image += 1
        else:
            n = len(chunks[doc.doc_id])
            vectors[doc.doc_id] = text_vecs[at_text:at_text + n]
            at_text += n
    kept = _check(run, batch, run.contracts.check_embeddings, docs, vectors, t.spec, chunks,
                  t.source)
    return {d.doc_id: vectors[d.doc_id] for d in kept}


def _embed(backend: Any, texts: list[str], images: list[bytes],
           ids: list[tuple[int, ...]] | None,
           tick: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed one batch of chunk texts (from the chunker's token ids when the backend takes them)
    and images; `tick` hears the number of items embedded so far."""
    if ids is not None:
        text_vecs = _embed_ids(backend, ids, tick)
    else:
        text_vecs = backend.embed_texts(texts)
        if tick is not None:
            tick(len(texts))
    image_vecs = (backend.embed_images(images) if images
                  else np.zeros((0, backend.spec.dimension), np.float32))
    if tick is not None and images:
        tick(len(texts) + len(images))
    return text_vecs, image_vecs


def _embed_ids(backend: Any, ids: list[tuple[int, ...]],
               tick: Callable[[int], None] | None) -> np.ndarray:
    """Token ids sorted longest first across the whole batch, then embedded PROGRESS_CHUNKS at a
    time: each call is a whole number of the backend's own batches, so the padding is what one
    call over the batch would pad (the backend sorts the same way), and progress is heard between
    calls. Vectors come back in input order."""
    if not ids:
        return np.zeros((0, backend.spec.dimension), np.float32)
    per_call = getattr(backend, "batch_size", PROGRESS_CHUNKS)
    step = per_call * max(1, PROGRESS_CHUNKS // per_call)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = np.empty((len(ids), backend.spec.dimension), np.float32)
    for start in range(0, len(order), step):
        part = order[start:start + step]
        out[part] = backend.embed_token_ids([ids[i] for i in part])
        if tick is not None:
            tick(start + len(part))
    return out


def token_ids(run: IngestRun, backend: Any, spec: ModelSpec, chunks: list[Chunk],
              chunk_config: ChunkingConfig | None = None) -> list[tuple[int, ...]] | None:
    """The chunks' token ids, when the backend takes ids made by the chunker's tokenizer."""
    if (isinstance(backend, EmbedsTokenIds)
            and Path(backend.path) == run.chunker(spec, chunk_config).tokenizer_dir and all(c.ids for c in chunks)):
        return [c.ids for c in chunks]
    return None


def make_points(run: IngestRun, batch: Batch, docs: list[Document],
                chunks: dict[str, list[Chunk]], vectors: dict[str, np.ndarray]
                ) -> dict[str, list[PointRecord]]:
    """Each document's points with their payload; a document fails the payload contract whole."""
    t = batch.target
    if not vectors:
        return {}
    sparse = sparse_vectors(run, batch, [d for d in docs if d.doc_id in vectors], chunks)
    points = {d.doc_id: build_points(t.collection, d, chunks[d.doc_id], vectors[d.doc_id],
                                     t.spec.id, t.now, t.expires_at, t.chunking,
                                     sparse.get(d.doc_id) if t.sparse is not None else None,
                                     t.sparse_signature)
              for d in docs if d.doc_id in vectors}
    ready = [d for d in docs if d.doc_id in points]
    kept = _check(run, batch, run.contracts.check_payloads, ready, points, t.spec, t.source)
    batch.outcomes += [Outcome(d.doc_id, "indexed", d.content_hash, len(points[d.doc_id]),
                               d.modality, d.size_bytes) for d in kept]
    return {d.doc_id: points[d.doc_id] for d in kept}


def sparse_vectors(run: IngestRun, batch: Batch, docs: list[Document],
                   chunks: dict[str, list[Chunk]]) -> dict[str, list[SparseVec]]:
    """BM25 vectors of each chunk's text (what the dense model embedded; an image's caption),
    when the collection has sparse vectors."""
    t = batch.target
    if t.sparse is None or not docs:
        return {}
    texts = [c.text for d in docs for c in chunks[d.doc_id]]
    flat = run.timed(batch.name, "sparse", len(texts), "sparse", run.bm25(t.sparse).documents,
                     texts)
    out: dict[str, list[SparseVec]] = {}
    at = 0
    for doc in docs:
        n = len(chunks[doc.doc_id])
        out[doc.doc_id] = flat[at:at + n]
        at += n
    return out


def write(run: IngestRun, store: VectorStore, batch: Batch,
          points: dict[str, list[PointRecord]]) -> None:
    """Upsert every new point, then delete the chunks the new versions no longer have."""
    t = batch.target
    flat = [p for mine in points.values() for p in mine]
    stale = [pid for doc_id, mine in points.items()
             for pid in stale_ids(batch.existing.get(doc_id), {p.id for p in mine})]
    size = run.settings.store.upsert_batch
    for start in range(0, len(flat), size):
        part = flat[start:start + size]
        run.timed(batch.name, "upsert", len(part), "upsert", store.upsert, t.collection, part,
                  io=True)
        batch.points_upserted += len(part)
        batch.sparse_written += sum(1 for p in part if p.sparse)
    if stale:
        run.timed(batch.name, "delete", len(stale), "delete-stale", store.delete, t.collection,
                  stale, io=True)


def settle_quarantine(run: IngestRun, store: VectorStore, batch: Batch, apply: bool) -> None:
    """Record each quarantined document, and apply its source's `on_invalid` policy to the
    version the index still holds: remove it, or keep it (and its expiry) alive."""
    t = batch.target
    remove: list[str] = []
    keep: list[str] = []
    for q in batch.quarantined:
        old = batch.existing.get(q.doc_id)
        previous = None
        if old is not None and old.ids:
            if t.source.on_invalid == "remove" and apply:
                remove += old.ids
                batch.existing.pop(q.doc_id)
                previous = "removed"
            else:
                if not old.already_expires_at(t.expires_at):
                    keep += old.ids
                previous = "kept"
        _record_quarantine(run, batch, q, previous)
    if remove:
        run.timed(batch.name, "delete", len(remove), "delete-invalid", store.delete,
                  t.collection, remove, io=True)
    if apply:
        refresh_expiry(run, store, t, keep)


def _record_quarantine(run: IngestRun, batch: Batch, q: Quarantined,
                       previous: str | None) -> None:
    reason = q.reason
    if previous == "removed":
        reason += " (its previously indexed version was removed from the index)"
    elif previous == "kept":
        reason += " (its previously indexed version was kept and is still searchable: on_invalid = keep_last_good)"
    run.events.add("quarantine", source=q.source, doc_id=q.doc_id, uri=q.uri, suite=q.suite,
                   expectation=q.expectation, observed=q.observed, reason=reason,
                   content_hash=q.content_hash, previous_version=previous, recorded_at=utcnow())
    batch.outcomes.append(Outcome(q.doc_id, "quarantined", content_hash=q.content_hash))
