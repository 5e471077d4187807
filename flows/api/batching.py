"""Micro-batching for query embedding: concurrent searches share one model call.

One worker thread owns the model. Each search thread queues its query and waits; the worker
takes everything queued (up to `max_batch`) and embeds it in one call, so under load eight
concurrent queries cost about one batch instead of eight calls, and nothing waits for a timer
when the service is idle. The single owner is also the lock OpenVINO needs: one infer request
must not run on two threads at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from models import EmbeddingBackend

_STOP = object()


class BatchingEmbedder:
    """An EmbeddingBackend that funnels queries and images through one worker thread."""

    def __init__(self, backend: EmbeddingBackend, max_batch: int = 32) -> None:
        self.backend = backend
        self.spec = backend.spec
        self.stats = backend.stats
        self.max_batch = max_batch
        self.batches = 0  # model calls made, for tests and the load report
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="tessera-embed", daemon=True)
        self._thread.start()

    def _submit(self, kind: str, items: list[Any]) -> np.ndarray:
        futures: list[Future[np.ndarray]] = []
        for item in items:
            future: Future[np.ndarray] = Future()
            self._queue.put((kind, item, future))
            futures.append(future)
        if not futures:
            return np.zeros((0, self.spec.dimension), dtype=np.float32)
        return np.stack([f.result() for f in futures])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Queue the queries; returns when the batch holding them is embedded."""
        return self._submit("query", texts)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Documents' text, through the same worker."""
        return self._submit("text", texts)

    def embed_images(self, images: list[bytes]) -> np.ndarray:
        """Encoded images, through the same worker."""
        return self._submit("image", images)

    def _loop(self) -> None:
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
                    self._run(kind, group)

    def _run(self, kind: str, group: list[Any]) -> None:
        embeds: dict[str, Callable[[Any], np.ndarray]] = {
            "query": self.backend.embed_queries, "text": self.backend.embed_texts,
            "image": self.backend.embed_images}
        embed = embeds[kind]
        try:
            vectors = embed([item for _, item, _ in group])
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the model's error
            for _, _, future in group:
                future.set_exception(exc)
            return
        self.batches += 1
        for (_, _, future), vector in zip(group, vectors, strict=True):
            future.set_result(vector)

    def close(self) -> None:
        """Stop the worker (after what is queued) and release the model."""
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self.backend.close()
