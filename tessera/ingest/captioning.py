"""Captioning's state: the one code path from image bytes to captions through the content cache
(`caption_with_cache`), and what an ingest run keeps for it (`RunCaptions`: backends loaded once,
the cache, the tallies). The batch steps that use them are in tessera/ingest/captions.py.

`caption_with_cache` is what everything calls: image ingest, `tessera caption` and an HTTP route
(`tessera.service.caption`). It hashes each image, reads the cache, captions only the misses (a
failing batch is halved until the bad image is found, so one bad image never costs the others
their captions), stores the new captions and says, per image, whether the caption was made or
reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models import make_captioner
from models.caption_cache import CaptionCache, cache_path, image_hash
from models.captioning import (
    CaptionBackend,
    cache_key,
    caption_each,
    captioner_spec,
)
from tessera.core.events import utcnow

if TYPE_CHECKING:
    from models.registry import ModelSpec
    from tessera.core.events import EventLog
    from tessera.core.settings import Settings, SourceConfig

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

    def record(self, events: EventLog) -> None:
        """One `caption_runs` row per captioning source; then release the models."""
        for name, mine in self.sources.items():
            stats = mine.backend.stats if mine.backend is not None else None
            events.add(
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


