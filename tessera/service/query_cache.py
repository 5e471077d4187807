"""Recently embedded queries: a bounded LRU of query vectors for a serving process.

Real traffic repeats itself (the same questions from many users, an app's suggested queries, an
agent retrying), and embedding a query is most of a search's CPU. A serving process keeps the
vectors of the last `api.query_cache_size` distinct queries, keyed by the model, the runtime that
embedded it (bf16 and int8 vectors differ slightly) and the text with its whitespace normalised
(the tokenizer splits on whitespace, so "a  b " and "a b" embed alike). Case is kept: whether a
model folds case is the model's business. Hits, misses and size are exported as metrics
(`tessera_query_cache_*`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def normalise(text: str) -> str:
    """The cache's form of a query: runs of whitespace as one space, none at either end."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CacheStats:
    """One cache's counters, as the metrics read them."""

    hits: int
    misses: int
    entries: int
    capacity: int


class QueryCache:
    """An LRU of query vectors under one namespace (a model and its runtime); thread-safe."""

    def __init__(self, capacity: int, namespace: str) -> None:
        self.capacity = capacity
        self.namespace = namespace
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> np.ndarray | None:
        """The cached vector of `text` (read-only), counting a hit or a miss."""
        key = normalise(text)
        with self._lock:
            vector = self._vectors.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._vectors.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, text: str, vector: np.ndarray) -> None:
        """Keep `text`'s vector (a read-only copy), dropping the least recently used past
        capacity."""
        if self.capacity <= 0:
            return
        kept = np.array(vector, dtype=np.float32, copy=True)
        kept.flags.writeable = False
        key = normalise(text)
        with self._lock:
            self._vectors[key] = kept
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._vectors), self.capacity)
