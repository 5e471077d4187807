"""The query cache: a bounded LRU keyed by the whitespace-normalised text, whose vectors are the
model's own, and which a serving process consults before the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tessera.service.batching import BatchingEmbedder
from tessera.service.query_cache import QueryCache, normalise


def test_whitespace_is_normalised_and_case_is_kept() -> None:
    assert normalise("  vitamin\tD \n deficiency ") == "vitamin D deficiency"
    assert normalise("Vitamin D") != normalise("vitamin d")


def test_the_least_recently_used_goes_first_and_counts_are_kept() -> None:
    cache = QueryCache(2, "m")
    for text in ("a", "b"):
        cache.put(text, np.full(3, ord(text), dtype=np.float32))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", np.zeros(3, dtype=np.float32))
    assert cache.get("b") is None and cache.get(" a ") is not None and cache.get("c") is not None
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.capacity) == (3, 1, 2, 2)


def test_cached_vectors_are_read_only_copies() -> None:
    cache = QueryCache(4, "m")
    vector = np.ones(3, dtype=np.float32)
    cache.put("q", vector)
    vector[0] = 5  # the caller's array is not the cache's
    held = cache.get("q")
    assert held is not None and held[0] == 1
    with pytest.raises(ValueError, match="read-only"):
        held[0] = 2


def test_size_zero_keeps_nothing() -> None:
    cache = QueryCache(0, "m")
    cache.put("q", np.ones(3, dtype=np.float32))
    assert cache.get("q") is None and cache.stats().entries == 0


def test_a_repeated_query_skips_the_model_and_gets_the_models_vector(minilm: Any) -> None:
    embedder = BatchingEmbedder(minilm, cache_size=8)
    try:
        first = embedder.embed_queries(["bone fractures and vitamin D"])
        calls = embedder.batches
        again = embedder.embed_queries(["bone  fractures and vitamin D ", "tidal energy"])
        assert embedder.batches == calls + 1  # one model call, for the new query only
        np.testing.assert_array_equal(again[0], first[0])
        np.testing.assert_allclose(again[1], minilm.embed_queries(["tidal energy"])[0],
                                   atol=1e-6)
        assert embedder.cache.stats().hits == 1 and embedder.cache.stats().misses == 2
        assert embedder.cache.namespace == f"{minilm.spec.id} (LocalBackend)"
    finally:
        embedder.close()
