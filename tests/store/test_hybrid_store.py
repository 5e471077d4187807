"""Hybrid layout on both stores (Qdrant Edge, qdrant-client local mode): BM25 sparse vectors beside
dense ones, dense / sparse / hybrid queries fused in the engine, filters inside every prefetch,
document results, and the sparse config as part of the collection's identity."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tessera.core.errors import ConfigError, SparseConfigMismatchError, VectorStoreError
from tessera.core.query import StoreQuery
from tessera.core.settings import load_settings
from tessera.core.sparse import Bm25Encoder, SparseConfig, sparse_identity, sparse_signature
from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
from tessera.store import VectorStore, ensure_collection

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

SPARSE = sparse_identity(SparseConfig())
INFO = CollectionInfo("h", "model-a", "a", 8, "cosine", "a", sparse=SPARSE)
BM25 = Bm25Encoder(SparseConfig())
# (doc id, source, chunk texts): "zeta-9 kinase" is in one chunk of one document only.
DOCS = [
    ("d0", "a", ["proteins fold into shapes", "the zeta-9 kinase phosphorylates tau"]),
    ("d1", "a", ["proteins fold slowly", "chaperones help proteins fold"]),
    ("d2", "b", ["kinase inhibitors in cancer", "kinase signalling cascades"]),
    ("d3", "b", ["ocean tides and the moon", "tidal power plants"]),
]


def _vec(i: int) -> np.ndarray:
    v = np.zeros(8, np.float32)
    v[i % 8] = 1.0
    v[(i + 1) % 8] = 0.2
    return v


def _points(collection: str = "h", expires: int = 10_000) -> list[PointRecord]:
    out = []
    for n, (doc, source, chunks) in enumerate(DOCS):
        for i, text in enumerate(chunks):
            out.append(PointRecord(
                point_id(collection, doc, i), _vec(2 * n + i),
                {"doc_id": doc, "source": source, "modality": "text", "chunk_index": i,
                 "chunk_count": len(chunks), "text": text, "expires_at": expires + n,
                 "sparse": sparse_signature(SPARSE)},
                BM25.document(text)))
    return out


def _docs(hits: list) -> list[str]:
    return [h.payload["doc_id"] for h in hits]


def test_modes_dense_sparse_hybrid(store: VectorStore) -> None:
    """Sparse finds the exact term; dense finds the nearest vector; hybrid has both at the top."""
    ensure_collection(store, INFO)
    store.upsert("h", _points())
    store.upsert("h", _points())  # idempotent with sparse vectors too
    assert store.count("h") == 8
    term = BM25.query("zeta-9")
    sparse = store.query("h", StoreQuery(limit=5, sparse=term))
    assert _docs(sparse) == ["d0"] and sparse[0].payload["chunk_index"] == 1
    dense = store.query("h", StoreQuery(limit=2, dense=_vec(6)))
    assert _docs(dense)[0] == "d3" and "d0" not in _docs(dense)
    hybrid = store.query("h", StoreQuery(limit=3, dense=_vec(6), sparse=term))
    assert {"d0", "d3"} <= set(_docs(hybrid)[:2])
    dbsf = store.query("h", StoreQuery(limit=3, dense=_vec(6), sparse=term, fusion="dbsf"))
    assert {"d0", "d3"} <= set(_docs(dbsf)[:2])
    batch = store.query_batch("h", [StoreQuery(limit=5, sparse=term),
                                    StoreQuery(limit=2, dense=_vec(6))])
    assert [_docs(r) for r in batch] == [_docs(sparse), _docs(dense)]


def test_each_side_of_a_hybrid_query_has_its_own_depth(tmp_path: Path) -> None:
    """`dense_prefetch` and `sparse_prefetch` reach both engines' requests (unset: `prefetch`;
    never under the results asked for), and the Edge engine answers such a query."""
    from tessera.core.settings import StoreConfig
    from tessera.store.edge import EdgeStore
    from tessera.store.edge.requests import store_request
    from tessera.store.server import ServerStore

    q = StoreQuery(limit=5, dense=_vec(6), sparse=BM25.query("kinase"), prefetch=100,
                   dense_prefetch=40, sparse_prefetch=2)
    edge = store_request(INFO, q)
    assert [p.limit for p in edge.prefetches] == [40, 5]  # sparse: 2, raised to the 5 asked for
    server = ServerStore(StoreConfig(kind="qdrant", path=tmp_path / "local"))
    try:
        assert [p.limit for p in server._request(INFO, q)["prefetch"]] == [40, 5]
        plain = StoreQuery(limit=5, dense=_vec(6), sparse=BM25.query("kinase"), prefetch=100)
        assert [p.limit for p in server._request(INFO, plain)["prefetch"]] == [100, 100]
    finally:
        server.close()
    store = EdgeStore(tmp_path / "edge")
    try:
        ensure_collection(store, INFO)
        store.upsert("h", _points())
        one = StoreQuery(limit=1, dense=_vec(6), sparse=BM25.query("zeta-9"), fusion="rrf",
                         dense_prefetch=1, sparse_prefetch=1)
        [hit] = store.query("h", one)
        # Each side brought its single best: the fusion chose between those two only.
        best = {_docs(store.query("h", StoreQuery(limit=1, dense=_vec(6))))[0],
                _docs(store.query("h", StoreQuery(limit=1, sparse=BM25.query("zeta-9"))))[0]}
        assert hit.payload["doc_id"] in best
    finally:
        store.close()


def test_filters_apply_inside_every_prefetch(store: VectorStore) -> None:
    """A source filter holds on both sides of a hybrid query, even when the best match is elsewhere."""
    ensure_collection(store, INFO)
    store.upsert("h", _points())
    q = StoreQuery(limit=10, dense=_vec(0), sparse=BM25.query("zeta-9 kinase proteins"),
                   match=Match(source="b"), prefetch=1)
    hits = store.query("h", q)
    assert hits and set(_docs(hits)) <= {"d2", "d3"}
    # prefetch=1 per side, filtered first: the filtered best of each side, not an empty result
    assert "d2" in _docs(hits)
    assert store.query("h", StoreQuery(limit=5, sparse=BM25.query("zeta-9"),
                                       match=Match(source="b"))) == []


def test_documents_not_chunks(store: VectorStore) -> None:
    """query_documents returns distinct documents, each as its best chunk; chunks stay raw."""
    ensure_collection(store, INFO)
    store.upsert("h", _points())
    q = StoreQuery(limit=3, sparse=BM25.query("proteins fold kinase"), overfetch=1)
    chunks = _docs(store.query("h", q))
    assert len(chunks) == 3 and len(set(chunks)) < 3  # raw hits repeat a document
    docs = store.query_documents("h", q)
    assert len(docs) == 3 and len(set(_docs(docs))) == 3
    best = {h.payload["doc_id"]: h for h in store.query("h", StoreQuery(limit=8, sparse=q.sparse))[::-1]}
    for hit in docs:  # each document's hit is its best-scoring chunk
        assert hit.id == best[hit.payload["doc_id"]].id
    assert len(store.query_documents("h", StoreQuery(limit=50, dense=_vec(0)))) == 4


def test_deletes_and_prune_remove_sparse_vectors_too(store: VectorStore) -> None:
    """Deleting a point (by id or by expiry) leaves nothing of it for sparse search to find."""
    ensure_collection(store, INFO)
    store.upsert("h", _points(expires=1000))  # d0..d3 expire at 1000..1003
    store.delete("h", [point_id("h", "d0", 1)])
    assert store.query("h", StoreQuery(limit=5, sparse=BM25.query("zeta-9"))) == []
    assert _docs(store.query("h", StoreQuery(limit=5, sparse=BM25.query("tides"))))[0] == "d3"
    store.delete_expired("h", 1003)
    assert store.count("h") == 0
    assert store.query("h", StoreQuery(limit=5, sparse=BM25.query("tides kinase proteins"))) == []


def test_sparse_config_is_part_of_the_identity(store: VectorStore,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Another BM25 config is refused with the difference and the way to migrate; a collection
    without sparse vectors still takes (dense-only) writes, with a warning."""
    ensure_collection(store, INFO)
    other = CollectionInfo(**{**INFO.__dict__, "sparse": sparse_identity(SparseConfig(k=2.0))})
    with pytest.raises(SparseConfigMismatchError, match=r"k: 1\.2 -> 2\.0") as err:
        ensure_collection(store, other)
    assert "new collection" in str(err.value) and "tessera alias" in str(err.value)
    off = CollectionInfo(**{**INFO.__dict__, "sparse": None})
    with pytest.raises(SparseConfigMismatchError, match="sparse.enabled = false"):
        ensure_collection(store, off)
    assert store.get_collection("h") == INFO  # recorded, and read back equal

    legacy = CollectionInfo("old", "model-a", "a", 8, "cosine", "a")
    ensure_collection(store, legacy)
    with caplog.at_level(logging.WARNING):
        got = ensure_collection(store, CollectionInfo(**{**legacy.__dict__, "sparse": SPARSE}))
    assert got.sparse is None and "backfill-sparse" in caplog.text
    store.upsert("old", _points("old"))  # sparse vectors dropped: the collection has none
    assert store.count("old") == 8
    with pytest.raises(VectorStoreError, match="backfill-sparse --collection old"):
        store.query("old", StoreQuery(limit=3, sparse=BM25.query("zeta-9")))


def test_sparse_vector_added_to_an_existing_collection(store: VectorStore) -> None:
    """add_sparse_vector (idempotent) and set_sparse give old points sparse vectors in place."""
    legacy = CollectionInfo("old", "model-a", "a", 8, "cosine", "a")
    ensure_collection(store, legacy)
    pts = _points("old")
    store.upsert("old", pts)
    store.add_sparse_vector("old", SPARSE)
    store.add_sparse_vector("old", SPARSE)
    store.record_collection(CollectionInfo(**{**legacy.__dict__, "sparse": SPARSE}))
    store.set_sparse("old", {p.id: p.sparse for p in pts})
    assert _docs(store.query("old", StoreQuery(limit=5, sparse=BM25.query("zeta-9")))) == ["d0"]
    assert store.get_collection("old").sparse == SPARSE  # type: ignore[union-attr]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("language", "klingon", "unknown BM25 language; use one of .*english"),
    ("k", -1, "k must be >= 0"),
    ("b", 1.5, "b must be between 0 and 1"),
    ("stemmer", "elvish", "stemmer must be"),
])
def test_invalid_sparse_settings_fail_at_start(tmp_path: Path, key: str, value: object,
                                               message: str) -> None:
    """The key, the value and the fix, before any work."""
    path = tmp_path / "tessera.toml"
    path.write_text(f"[sparse]\n{key} = {value!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(path)
    assert err.value.key == f"sparse.{key}" and err.value.value == value


def test_invalid_sparse_setting_exits_2_with_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    path = tmp_path / "tessera.toml"
    path.write_text(f'home = "{tmp_path / "home"}"\n[sparse]\nlanguage = "klingon"\n')
    assert main(["search", "anything", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sparse.language" in err[0] and "klingon" in err[0]
    assert not (tmp_path / "home").exists()  # refused before any work
