"""Micro-batching for query embedding: concurrent searches share model calls.

Each worker thread owns one copy of the model. Each search thread queues its query and waits; a
free worker takes everything queued (up to `max_batch`) and embeds it in one call, so under load
eight concurrent queries cost a few batches instead of eight calls, and nothing waits for a
timer when the service is idle. The single owner per copy is also the lock OpenVINO needs: one
infer request must not run on two threads at once. One copy is the default (`api.embed_workers`);
on 2 cores it did better than two single-thread copies.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from models import EmbeddingBackend
from tessera.core import telemetry
from tessera.service.query_cache import QueryCache

_STOP = object()


class BatchingEmbedder:
    """An EmbeddingBackend that funnels queries and images through a worker thread per copy of
    the model."""

    def __init__(self, backend: EmbeddingBackend, max_batch: int = 32,
                 more: Sequence[EmbeddingBackend] = (), cache_size: int = 0) -> None:
        """`backend` and each of `more` (copies of the same model) get a worker thread; the
        vectors of the last `cache_size` distinct queries are kept (0: none)."""
        self.backend = backend
        precision = ("int8 queries" if getattr(backend, "query_ir", None) is not None
                     else getattr(backend, "precision", ""))
        runtime = f"{type(backend).__name__} {precision}".strip()
        self.cache = QueryCache(cache_size, f"{backend.spec.id} ({runtime})")
        self.backends = [backend, *more]
        self.spec = backend.spec
        self.stats = backend.stats
        self.max_batch = max_batch
        self.batches = 0  # model calls made, for tests and the load report
        self._count = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, args=(b,), daemon=True,
                                          name=f"tessera-embed-{i}")
                         for i, b in enumerate(self.backends)]
        for thread in self._threads:
            thread.start()

    def _submit(self, kind: str, items: list[Any]) -> np.ndarray:
        futures: list[Future[np.ndarray]] = []
        queued = time.time_ns()
        for item in items:
            future: Future[np.ndarray] = Future()
            self._queue.put((kind, item, future))
            futures.append(future)
        if not futures:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        vectors = np.stack([f.result() for f in futures])
        # The wait and the model call happened on the worker's thread (the first item's batch; a
        # long request spans several): attributes of the caller's span (`embed query`), not
        # spans of their own, which cost an exported search more than the 3% allowed
        # (benchmarks/REPORT.md, Tracing).
        started, ended, size = getattr(futures[0], "timing", (queued, queued, 0))
        telemetry.set_attributes(queue_wait_ms=round((started - queued) / 1e6, 3),
                                 model_ms=round((ended - started) / 1e6, 3), batch_size=size)
        return vectors

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """The queries' vectors: from the cache, or queued and returned when the batch holding
        them is embedded."""
        if self.cache.capacity <= 0:
            return self._submit("query", texts)
        found = [self.cache.get(text) for text in texts]
        missing = [i for i, vector in enumerate(found) if vector is None]
        telemetry.set_attributes(cache_hits=len(texts) - len(missing))
        if missing:
            fresh = self._submit("query", [texts[i] for i in missing])
            for i, vector in zip(missing, fresh, strict=True):
                self.cache.put(texts[i], vector)
                found[i] = vector
        if not texts:
            return self._submit("query", [])
        return np.stack(found)  # type: ignore[arg-type]  # every slot is filled by now

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Documents' text, through the same worker."""
        return self._submit("text", texts)

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Encoded images, through the same worker."""
        return self._submit("image", images)

    def _loop(self, backend: EmbeddingBackend) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            for kind in ("query", "text", "image"):
                group = [b for b in batch if b[0] == kind]
                if group:
                    self._run(backend, kind, group)

    def _run(self, backend: EmbeddingBackend, kind: str, group: list[Any]) -> None:
        embeds: dict[str, Callable[[Any], np.ndarray]] = {
            "query": backend.embed_queries, "text": backend.embed_texts,
            "image": backend.embed_images}
        embed = embeds[kind]
        started = time.time_ns()
        try:
            vectors = embed([item for _, item, _ in group])
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the model's error
            for _, _, future in group:
                future.set_exception(exc)
            return
        with self._count:
            self.batches += 1
        timing = (started, time.time_ns(), len(group))
        for (_, _, future), vector in zip(group, vectors, strict=True):
            future.timing = timing  # type: ignore[attr-defined]
            future.set_result(vector)

    def close(self) -> None:
        """Stop the workers (after what is queued) and release the models."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)
        for backend in self.backends:
            backend.close()
