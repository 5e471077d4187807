"""The captioning steps of an ingest batch.

A source with `options.caption = "model"` or `"both"` gets them: before the diff, each image's
content hash is stamped with the captioner's key (model, revision, generation settings), so
changing the captioner re-captions and re-embeds, and nothing else does; after the diff, only the
changed images are captioned (through `captioning.caption_with_cache`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from tessera.core.types import Document, Quarantined
from tessera.ingest.captioning import caption_with_cache

if TYPE_CHECKING:
    from models.registry import ModelSpec
    from tessera.core.settings import SourceConfig
    from tessera.ingest.context import Batch, IngestRun

logger = logging.getLogger(__name__)


def stamp(run: IngestRun, batch: Batch, docs: list[Document]) -> list[Document]:
    """Before the diff: refuse animated images, and tie each image's content hash to the
    captioner, so a new captioner (or setting) re-captions and nothing else does."""
    mine = run.captions.for_source(batch.target.source)
    if mine is None:
        return docs
    key = run.captions.key(mine.spec)
    kept = []
    for doc in docs:
        if doc.modality != "image":
            kept.append(doc)
            continue
        frames = int(doc.metadata.get("frames") or 1)
        if frames > 1 and not _has_sidecar(doc, batch.target.source):
            batch.quarantined.append(_quarantined(
                doc, "image_not_animated",
                f"an animated image ({frames} frames) is not captioned: one frame may not show "
                "what it is about; give it a sidecar caption (options.caption = \"both\" uses "
                "it) or export one still frame"))
            continue
        digest = hashlib.sha256(f"{doc.content_hash}|{key}".encode()).hexdigest()
        kept.append(replace(doc, content_hash=digest))
    return kept


def caption(run: IngestRun, batch: Batch, docs: list[Document]) -> list[Document]:
    """After the diff: caption the changed images (cache first); failures are quarantined."""
    source = batch.target.source
    mine = run.captions.for_source(source)
    images = [d for d in docs if d.modality == "image" and not _animated(d)]
    if mine is None or not images:
        return docs
    mine.backend = run.captions.backend(mine.spec)
    start, gpu_before = time.perf_counter(), mine.backend.stats.gpu_seconds
    results = run.timed(batch.name, "caption", len(images), "caption", caption_with_cache,
                        mine.backend, run.captions.cache, [d.data or b"" for d in images])
    mine.tally.add(results, time.perf_counter() - start)
    mine.tally.gpu_seconds += mine.backend.stats.gpu_seconds - gpu_before
    by_id = {d.doc_id: r for d, r in zip(images, results, strict=True)}
    kept = []
    for doc in docs:
        result = by_id.get(doc.doc_id)
        if result is None:
            kept.append(doc)  # an animated image with a sidecar: its sidecar only
        elif result.caption is None:
            batch.quarantined.append(_quarantined(
                doc, "caption_generated", f"the captioner {mine.spec.name!r} failed on this "
                f"image ({result.error}); check the image, or give it a sidecar caption and set "
                "options.caption = \"sidecar\""))
        else:
            kept.append(_with_caption(doc, result.caption, mine.spec, source))
    return kept


def _with_caption(doc: Document, text: str, spec: ModelSpec, source: SourceConfig) -> Document:
    sidecar = doc.metadata.get("caption_source") == "sidecar"
    both = source.options.caption == "both" and sidecar
    meta = {**doc.metadata, "caption_source": "both" if both else "model", "caption": text,
            "captioner": spec.id}
    return replace(doc, text=f"{doc.text}\n{text}" if both else text, metadata=meta)


def _animated(doc: Document) -> bool:
    return int(doc.metadata.get("frames") or 1) > 1


def _has_sidecar(doc: Document, source: SourceConfig) -> bool:
    return source.options.caption == "both" and doc.metadata.get("caption_source") == "sidecar"


def _quarantined(doc: Document, expectation: str, reason: str) -> Quarantined:
    return Quarantined(source=doc.source, doc_id=doc.doc_id, uri=doc.uri,
                       reason=f"{doc.metadata.get('path', doc.uri)}: {reason}",
                       expectation=expectation, suite="caption", content_hash=doc.content_hash)
