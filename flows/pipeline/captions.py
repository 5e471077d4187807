"""Captioning: the one code path from image bytes to captions, through the content cache.

`caption_with_cache` is what everything calls: image ingest (the `caption` step of a batch,
below), `tessera caption` and an HTTP route (`flows.api.caption`). It hashes each image, reads
the cache, captions only the misses (a failing batch is halved until the bad image is found, so
one bad image never costs the others their captions), stores the new captions and says, per
image, whether the caption was made or reused.

In an ingest, a source with `options.caption = "model"` or `"both"` gets the step: before the
diff, each image's content hash is stamped with the captioner's key (model, revision,
generation settings), so changing the captioner re-captions and re-embeds, and nothing else
does; after the diff, only the changed images are captioned.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from models.caption_cache import CaptionCache, cache_path, image_hash
from models.captioning import (
    CaptionBackend,
    cache_key,
    caption_each,
    captioner_spec,
    make_captioner,
)
from tessera.events import utcnow
from tessera.types import Document, Quarantined

if TYPE_CHECKING:
    from flows.pipeline.batch import Batch
    from flows.pipeline.ingest import IngestRun
    from models.registry import ModelSpec
    from tessera.settings import Settings, SourceConfig

logger = logging.getLogger(__name__)

MODEL_MODES = ("model", "both")


@dataclass
class CaptionResult:
    """One image's outcome: a caption (made now or reused from the cache), or why not."""

    sha256: str
    caption: str | None = None
    cached: bool = False
    error: str | None = None


@dataclass
class CaptionTally:
    """Captions made, reused and failed, and the time the captioner took."""

    made: int = 0
    reused: int = 0
    failed: int = 0
    seconds: float = 0.0
    gpu_seconds: float = 0.0  # this source's share, when sources share a captioner

    def add(self, results: list[CaptionResult], seconds: float) -> None:
        """Count one call's results."""
        self.made += sum(r.caption is not None and not r.cached for r in results)
        self.reused += sum(r.cached for r in results)
        self.failed += sum(r.error is not None for r in results)
        self.seconds += seconds


def caption_with_cache(backend: CaptionBackend, cache: CaptionCache,
                       images: list[bytes]) -> list[CaptionResult]:
    """A caption for each image, in order: from the cache, else from the captioner."""
    key = cache_key(backend.spec, backend.generation)
    hashes = [image_hash(data) for data in images]
    known = cache.get_many(hashes, key)
    todo: dict[str, bytes] = {}
    for digest, data in zip(hashes, images, strict=True):
        if digest not in known:
            todo.setdefault(digest, data)  # the same image twice is captioned once
    made: dict[str, str] = {}
    errors: dict[str, str] = {}
    if todo:
        for digest, (text, error) in zip(todo, caption_each(backend, list(todo.values())),
                                         strict=True):
            if text is not None:
                made[digest] = text
            else:
                errors[digest] = error or "no caption"
        cache.put_many(made, key)
    results, first = [], set()
    for digest in hashes:
        if digest in known:
            results.append(CaptionResult(digest, known[digest], cached=True))
        elif digest in made:
            results.append(CaptionResult(digest, made[digest], cached=digest in first))
            first.add(digest)
        else:
            results.append(CaptionResult(digest, error=errors.get(digest, "no caption")))
    return results


# -- the ingest step ------------------------------------------------------------------------

@dataclass
class SourceCaptions:
    """One source's captioning in one run, for the `caption_runs` event."""

    spec: ModelSpec
    backend: CaptionBackend | None = None
    tally: CaptionTally = field(default_factory=CaptionTally)


class RunCaptions:
    """What an ingest run keeps for captioning: backends (loaded once), the cache, the tallies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sources: dict[str, SourceCaptions] = {}
        self._backends: dict[str, CaptionBackend] = {}
        self._cache: CaptionCache | None = None

    def for_source(self, source: SourceConfig) -> SourceCaptions | None:
        """The source's captioner, or None when the source does not caption with a model."""
        if source.kind != "images" or source.options.caption not in MODEL_MODES:
            return None
        if source.name not in self.sources:
            spec = captioner_spec(self.settings, source.options.captioner)
            self.sources[source.name] = SourceCaptions(spec)
        return self.sources[source.name]

    def prepare(self, source: SourceConfig) -> None:
        """Before a source's first batch: its captioner is a captioner and its files exist."""
        mine = self.for_source(source)
        if mine is not None:
            mine.backend = self.backend(mine.spec)

    def backend(self, spec: ModelSpec) -> CaptionBackend:
        """The captioner's backend, made (not yet loaded) on first use."""
        if spec.name not in self._backends:
            self._backends[spec.name] = make_captioner(self.settings, spec)
        return self._backends[spec.name]

    @property
    def cache(self) -> CaptionCache:
        """The home's caption cache."""
        if self._cache is None:
            self._cache = CaptionCache(cache_path(self.settings.home))
        return self._cache

    def key(self, spec: ModelSpec) -> str:
        """The captioner key the run's content hashes are stamped with."""
        from models.captioning import Generation

        return cache_key(spec, Generation.from_config(self.settings.captioning))

    def summary(self) -> dict[str, int]:
        """Captions made and reused across the run's sources."""
        return {"captions_made": sum(s.tally.made for s in self.sources.values()),
                "captions_reused": sum(s.tally.reused for s in self.sources.values())}

    def record(self, run: IngestRun) -> None:
        """One `caption_runs` row per captioning source; then release the models."""
        for name, mine in self.sources.items():
            stats = mine.backend.stats if mine.backend is not None else None
            run.events.add(
                "caption_runs", source=name, captioner=mine.spec.id,
                backend=stats.backend if stats else None, device=stats.device if stats else None,
                gpu_type=stats.gpu_type if stats else None, made=mine.tally.made,
                reused=mine.tally.reused, failed=mine.tally.failed,
                seconds=round(mine.tally.seconds, 6), gpu_seconds=round(mine.tally.gpu_seconds, 6),
                recorded_at=utcnow())
        for backend in self._backends.values():
            backend.close()
        if self._cache is not None:
            self._cache.close()


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
