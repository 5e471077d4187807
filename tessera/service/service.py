"""The search service: the store and the models held open, behind the HTTP API and MCP server.

Every search goes through `tessera.service.search.search`, the code `tessera search` runs, with the
service's open store and its batching embedder passed in.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models import EmbeddingBackend, get_spec, make_backend
from models.optimized import OpenVINOBackend
from models.quantized import CALIBRATION_TEXTS, int8_query_ir
from tessera.core import suggest
from tessera.core.errors import PipelineError
from tessera.core.events import read_events
from tessera.core.fs import writable
from tessera.core.settings import Settings
from tessera.core.types import CollectionInfo, Match
from tessera.service.batching import BatchingEmbedder
from tessera.service.query_cache import CacheStats
from tessera.service.schemas import SearchRequest
from tessera.service.search import SearchQuery, image_refusal, public_uri, run_search
from tessera.service.snapshot import SnapshotReader
from tessera.store import VectorStore, open_store

logger = logging.getLogger(__name__)

PROBE_TEXT = "Tessera readiness probe: is the model the one the collection was built with?"
DOCUMENT_FIELDS = ["doc_id", "chunk_index", "chunk_count", "source", "title", "uri", "path",
                   "modality", "text"]
_MAX_DOC_ID = 4096
# A name found in the store's listing is trusted this long without listing again (a listing
# reads every folder). A name not found lists again at once; a collection dropped meanwhile is
# caught by `info`, which reads its record.
LISTING_SECONDS = 1.0


class NotFound(PipelineError):
    """No such collection, alias or document."""


class InvalidRequest(PipelineError):
    """A request field this service cannot use; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def _unknown_collection(name: str, collections: list[str], aliases: dict[str, str]) -> str:
    """Why `name` was not found, naming what a caller can type: aliases first, then collections
    no alias points at (a versioned `name--model-hash` behind an alias is an implementation
    detail, listed only when nothing else is)."""
    behind = set(aliases.values())
    plain = [c for c in collections if c not in behind]
    if not aliases and not plain:
        return (f"no collection or alias {name!r}; this index has no collections yet "
                "(run `tessera ingest`)")
    hint = (suggest.did_you_mean(name, [*aliases, *plain])
            or suggest.did_you_mean(name, collections))
    listed = ([f"aliases: {suggest.known(aliases)}"] if aliases else []) + (
        [f"collections: {suggest.known(plain)}"] if plain else [])
    return f"no collection or alias {name!r}{hint}; {'; '.join(listed)}"


class Reader(Protocol):
    """Where searches read: metadata from `live`, points through `reading(name)`."""

    live: Any

    def reading(self, name: str) -> Any:
        """A context manager giving the store to search `name` in."""
        ...

    def ready(self, name: str) -> bool:
        """Whether `reading(name)` can start now without waiting on a writer."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class DirectReader:
    """A Qdrant server: readers never wait on writers, so it is used as it is."""

    def __init__(self, store: VectorStore, serialize: bool = False) -> None:
        self.live = store
        # qdrant-client's local mode (tests, a laptop) is not safe across threads; a server is.
        self._lock = threading.Lock() if serialize else None

    @contextmanager
    def reading(self, name: str) -> Iterator[VectorStore]:
        """The store itself."""
        with self._lock or nullcontext():
            yield self.live

    def ready(self, name: str) -> bool:
        """Always: a server switches aliases atomically."""
        return True

    def close(self) -> None:
        """Close the client."""
        self.live.close()


def _snapshot_dir(home: Path) -> Path | None:
    """TESSERA_HOME/snapshots/<pid>, after deleting copies left by processes that are gone."""
    base = home / "snapshots"
    if not writable(home):
        return None
    base.mkdir(parents=True, exist_ok=True)
    for folder in base.iterdir():
        if folder.name.isdigit() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    return base / str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def open_reader(settings: Settings) -> Reader:
    """Snapshots of the embedded store, or the Qdrant server directly."""
    if settings.store.kind == "qdrant":
        return DirectReader(open_store(settings), serialize=settings.store.url is None)
    root = settings.store.path or settings.home / "qdrant"
    threads = settings.api.search_threads or _cores()
    return SnapshotReader(root, _snapshot_dir(settings.home), settings.api.snapshot_check_seconds,
                          threads)


class SearchService:
    """Holds the reader and one embedder per model for the process's life."""

    def __init__(self, settings: Settings, reader: Reader | None = None) -> None:
        self.settings = settings
        self.reader = reader or open_reader(settings)
        self._embedders: dict[str, BatchingEmbedder] = {}
        self._probes: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._listed: set[str] = set()  # the last listing of collections, and when it was made
        self._listed_at = 0.0
        self._serving: dict[str, str] = {}  # name asked for -> the collection last searched

    # -- collections -------------------------------------------------------------------------
    def resolve(self, collection: str | None) -> str:
        """The collection behind a name or alias; NotFound for anything else (no path is built
        from a name this store does not list)."""
        name = collection or self.settings.collection
        target = self.reader.live.aliases().get(name, name)
        now = time.monotonic()
        if target in self._listed and now - self._listed_at < LISTING_SECONDS:
            return self._settled(name, str(target))
        known = self.reader.live.list_collections()
        self._listed, self._listed_at = set(known), now
        if target not in known:
            raise NotFound(_unknown_collection(name, known, self.reader.live.aliases()))
        return self._settled(name, str(target))

    def _settled(self, name: str, target: str) -> str:
        """`target`; or, while an alias has just moved to a collection the reader cannot open
        yet (the migration that moved it still holds it), the collection it served before."""
        before = self._serving.get(name)
        if (before is not None and before != target and not self.reader.ready(target)
                and self.reader.live.get_collection(before) is not None):
            return before
        self._serving[name] = target
        return target

    def info(self, name: str) -> CollectionInfo:
        """The model recorded for a collection."""
        info = self.reader.live.get_collection(name)
        if info is None:
            raise NotFound(f"collection {name!r} does not exist")
        return info  # type: ignore[no-any-return]

    def embedder(self, info: CollectionInfo) -> BatchingEmbedder:
        """The collection's model, loaded on first use and kept."""
        with self._lock:
            found = self._embedders.get(info.model_id)
            if found is None:
                settings = self.settings
                if settings.api.embed_threads is not None:
                    embedding = settings.embedding.model_copy(
                        update={"threads": settings.api.embed_threads})
                    settings = settings.model_copy(update={"embedding": embedding})
                spec = get_spec(settings, info.model_name)
                backends = [make_backend(settings, spec)]
                # More copies only of a model that runs on a fixed number of threads (OpenVINO):
                # torch spreads one call over every core already.
                if isinstance(backends[0], OpenVINOBackend):
                    backends += [make_backend(settings, spec)
                                 for _ in range(settings.api.embed_workers - 1)]
                self._int8_queries(backends, info)
                backend, more = backends[0], backends[1:]
                found = self._embedders[info.model_id] = BatchingEmbedder(
                    backend, more=more, cache_size=settings.api.query_cache_size)
            return found

    def _int8_queries(self, backends: list[EmbeddingBackend], info: CollectionInfo) -> None:
        """With api.query_precision = "int8", queries go through the int8 copy of the model,
        calibrated on chunks of the collection that first loads it."""
        if self.settings.api.query_precision != "int8":
            return
        if not isinstance(backends[0], OpenVINOBackend):
            logger.warning("api.query_precision = 'int8' needs the OpenVINO runtime on CPU for "
                           "%s; queries are embedded as the documents were", info.model_name)
            return
        for backend in backends:
            if isinstance(backend, OpenVINOBackend):
                backend.query_ir = int8_query_ir(backend.spec, backend.path, backend.cache_dir,
                                                 lambda: self.sample_texts(info.name))

    def sample_texts(self, name: str, limit: int = CALIBRATION_TEXTS) -> list[str]:
        """Up to `limit` chunk texts of a collection (in point-id order: a spread sample)."""
        with self.reader.reading(name) as store:
            rows = islice(store.scan(name, Match(), ["text"]), limit)
            return [str(p["text"]) for _, p in rows if p.get("text")]

    def cache_stats(self) -> dict[str, CacheStats]:
        """Each loaded model's query cache counters, by its namespace (model and runtime)."""
        with self._lock:
            return {e.cache.namespace: e.cache.stats() for e in self._embedders.values()}

    def collections(self) -> dict[str, Any]:
        """Every collection's model, dimension, points and aliases."""
        aliases = dict(self.reader.live.aliases())
        rows = []
        for name in self.reader.live.list_collections():
            info = self.info(name)
            rows.append({"name": name, "model": info.model_id, "model_name": info.model_name,
                         "dimension": info.dimension, "distance": info.distance,
                         "modalities": list(info.modalities),
                         "sparse": getattr(info, "sparse", None), "points": self.points(name),
                         "aliases": sorted(a for a, c in aliases.items() if c == name)})
        return {"collections": rows, "aliases": aliases}

    def points(self, name: str) -> int:
        """Points in a collection, as searches see it."""
        with self.reader.reading(name) as store:
            return int(store.count(name))

    # -- search and documents ----------------------------------------------------------------
    def search(self, req: SearchRequest) -> tuple[dict[str, Any], dict[str, float]]:
        """`tessera search --json`'s answer for one request ({"results", "mode", "grouped",
        "collection", "warning"}), and where the time went (embed_ms, engine_ms)."""
        if req.k > self.settings.api.max_k:
            raise InvalidRequest("k", f"at most {self.settings.api.max_k} (api.max_k)")
        name = self.resolve(req.collection)
        info = self.info(name)
        refused = image_refusal(info) if req.image is not None else None
        if refused:
            raise InvalidRequest("image", refused)
        where = Match(equals=tuple(req.filters.equals.items()),
                      ranges=tuple((f, r.gte, r.lte) for f, r in req.filters.ranges.items()))
        timings: dict[str, float] = {}
        query = SearchQuery(text=req.query, image=req.image_bytes(), k=req.k, mode=req.mode,
                            chunks=req.chunks, source=req.filters.source,
                            modality=req.filters.modality, collection=name)
        with self.reader.reading(name) as store:
            answer = run_search(self.settings, query, self.embedder(info), store, where=where,
                                timings=timings)
            if not answer["results"] and req.filters.source is not None:
                self._check_source(store, name, req.filters.source, req.collection)
        if not req.with_text:
            for hit in answer["results"]:
                hit.pop("text", None)
        return answer, timings

    def _check_source(self, store: VectorStore, name: str, source: str,
                      asked: str | None) -> None:
        """Refuse a source with nothing in the collection, as `tessera search --source` does,
        naming the sources it holds. Run only when a search found nothing: a count per source
        named in the config or in ingest runs, on that path alone."""
        if store.count(name, Match(source=source)) > 0:
            return
        seen = {s.name for s in self.settings.sources}
        for row in read_events(self.settings.events_dir, "ingest_runs"):
            seen.update(n for n in (row.get("sources") or "").split(",") if n)
        held = [s for s in seen if s != source and store.count(name, Match(source=s)) > 0]
        raise InvalidRequest("filters.source", f"{source!r}: collection "
                             f"{asked or self.settings.collection!r} holds nothing from that "
                             f"source{suggest.did_you_mean(source, held)}; known sources: "
                             f"{suggest.known(held)}")

    def document(self, doc_id: str, collection: str | None = None) -> dict[str, Any]:
        """A document's chunks in order, from the payload; NotFound when it has no points."""
        name = self.resolve(collection)
        if not doc_id or len(doc_id) > _MAX_DOC_ID:
            raise NotFound(f"no document {doc_id[:80]!r} in collection {name!r}")
        with self.reader.reading(name) as store:
            rows = [payload for _, payload in
                    store.scan(name, Match(doc_ids=(doc_id,)), DOCUMENT_FIELDS)]
        if not rows:
            raise NotFound(f"no document {doc_id[:200]!r} in collection {name!r}")
        rows.sort(key=lambda r: r.get("chunk_index") or 0)
        first = rows[0]
        return {"doc_id": doc_id, "collection": name, "source": first.get("source"),
                "title": first.get("title"), "uri": public_uri(self.settings, first),
                "modality": first.get("modality"),
                "chunk_count": int(first.get("chunk_count") or len(rows)),
                "chunks": [{"chunk_index": r.get("chunk_index"), "text": r.get("text")}
                           for r in rows]}

    # -- life --------------------------------------------------------------------------------
    def _probe(self, info: CollectionInfo) -> np.ndarray:
        vector = self.embedder(info).embed_queries([PROBE_TEXT])[0]
        return np.asarray(vector, dtype=np.float32)

    def warm(self) -> None:
        """Load the default collection's model, embed the probe, open the store: before the
        first request, not during it. A missing collection is not an error here (readyz says)."""
        try:
            name = self.resolve(None)
            info = self.info(name)
            self._probes[info.model_id] = self._probe(info)
            self.points(name)
        except PipelineError as exc:
            logger.warning("the search service starts without its default collection: %s", exc)

    def ready(self) -> dict[str, Any]:
        """Checks for /readyz: store open, model loaded, probe vector as at start."""
        checks: dict[str, Any] = {}
        try:
            name = self.resolve(None)
            info = self.info(name)
            checks["store"] = {"ok": True, "collection": name, "points": self.points(name)}
            checks["model"] = {"ok": info.model_id in self._embedders, "model": info.model_id}
            vector = self._probe(info)
            reference = self._probes.setdefault(info.model_id, vector)
            cosine = float(vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference)))
            checks["probe"] = {"ok": vector.shape[0] == info.dimension and cosine >= 0.999,
                               "dimension": int(vector.shape[0]), "cosine": round(cosine, 6)}
        except PipelineError as exc:
            checks["error"] = {"ok": False, "message": str(exc)}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}

    def close(self) -> None:
        """Stop the embedders and close the store."""
        with self._lock:
            embedders = list(self._embedders.values())
            self._embedders.clear()
        for embedder in embedders:
            embedder.close()
        self.reader.close()
