"""Query embedding in the search service: concurrent queries share model calls across worker
copies of the model, each caller gets its own vector, and errors reach only their own batch."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the service's copies are of the OpenVINO runtime")

from models.optimized import OpenVINOBackend  # noqa: E402
from models.registry import BUILTIN, resolve_model_path  # noqa: E402
from tessera.core.errors import EmbeddingError  # noqa: E402
from tessera.service.batching import BatchingEmbedder  # noqa: E402

SPEC = BUILTIN["all-minilm-l6-v2"]
QUERIES = [f"{w} and the {i % 7}th effect on cell growth" for i, w in enumerate(
    ["aspirin", "glacier", "tides", "insulin", "BRCA1", "magma", "sleep", "ribosome"] * 6)]
QUERIES[40] = QUERIES[3]  # the same text twice, far apart
QUERIES[41] = "x"  # one token: the shortest input next to longer ones


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> list[OpenVINOBackend]:
    cache = tmp_path_factory.mktemp("ov-cache")
    made = [OpenVINOBackend(SPEC, resolve_model_path(SPEC), cache, "f32", threads=1)
            for _ in range(2)]
    for backend in made:
        backend.runner  # noqa: B018 - compile now (the export is made once, by the first)
    return made


@pytest.fixture
def embedder(backends: list[OpenVINOBackend]) -> Iterator[BatchingEmbedder]:
    backend, *more = backends
    made = BatchingEmbedder(backend, more=more)
    yield made
    made.close()


def _each_alone(backend: OpenVINOBackend, texts: list[str]) -> np.ndarray:
    return np.stack([backend.embed_queries([t])[0] for t in texts])


def test_concurrent_queries_share_calls_and_each_gets_its_own_vector(
        embedder: BatchingEmbedder, backends: list[OpenVINOBackend]) -> None:
    want = _each_alone(backends[0], QUERIES)
    before = [b.stats.items for b in backends]
    barrier = threading.Barrier(16)

    def ask(i: int) -> tuple[int, np.ndarray]:
        if i < 16:
            barrier.wait()  # sixteen callers at once: calls must be shared
        return i, embedder.embed_queries([QUERIES[i]])[0]

    for _ in range(5):  # until both copies have taken work (the first takes all when idle)
        calls = embedder.batches
        with ThreadPoolExecutor(16) as pool:
            got = dict(pool.map(ask, range(len(QUERIES))))
        for i, text in enumerate(QUERIES):
            assert float(got[i] @ want[i]) > 0.9999, f"query {i} ({text!r}) got another's vector"
        assert embedder.batches - calls < len(QUERIES)
        if all(b.stats.items > n for b, n in zip(backends, before, strict=True)):
            break
    else:
        pytest.fail("one copy of the model embedded everything")
    assert embedder.embed_queries([]).shape == (0, SPEC.dimension)


def test_a_failing_call_fails_only_its_own_waiters_and_the_workers_go_on(
        embedder: BatchingEmbedder) -> None:
    with pytest.raises(EmbeddingError, match="text only"):
        embedder.embed_images([b"not an image"])  # this runtime refuses images
    vectors = embedder.embed_queries(QUERIES[:3])
    assert vectors.shape == (3, SPEC.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_close_stops_every_worker(backends: list[OpenVINOBackend]) -> None:
    embedder = BatchingEmbedder(backends[0], more=backends[1:])
    embedder.embed_queries(QUERIES[:2])
    embedder.close()
    assert not any(t.is_alive() for t in embedder._threads)
    assert all(b._runner is None for b in backends)  # the compiled models were released


def test_the_service_makes_the_copies_and_threads_its_settings_ask_for(
        make_config: Callable[..., Path]) -> None:
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest
    from tessera.service.service import SearchService
    from tests.support.paths import EXAMPLES

    settings = load_settings(make_config(
        sources=[{"name": "docs", "path": str(EXAMPLES)}],
        embedding={"runtime": "openvino", "device": "cpu"},
        api={"embed_workers": 3, "embed_threads": 1}))
    run_ingest(settings)
    service = SearchService(settings)
    try:
        info = service.info(service.resolve(None))
        embedder = service.embedder(info)
        assert len(embedder.backends) == 3 and len(embedder._threads) == 3
        assert {getattr(b, "threads", None) for b in embedder.backends} == {1}
        assert service.embedder(info) is embedder  # made once per model
    finally:
        service.close()
