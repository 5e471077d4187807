"""Both store implementations behave the same: Qdrant Edge and qdrant-client (local mode)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flows.pipeline.store import VectorStore, ensure_collection
from flows.pipeline.store.edge import EdgeStore
from flows.pipeline.store.server import ServerStore
from tessera.errors import ModelMismatchError, StoreLockedError
from tessera.settings import StoreConfig
from tessera.types import CollectionInfo, Match, PointRecord, point_id

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

INFO = CollectionInfo("c", "model-a", "a", 8, "cosine", "a")


@pytest.fixture(params=["edge", "qdrant-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s: VectorStore
    if request.param == "edge":
        s = EdgeStore(tmp_path / "edge")
    else:
        s = ServerStore(StoreConfig(kind="qdrant", path=tmp_path / "local"))
    yield s
    s.close()


def _points(n: int, source: str = "s", expires: int = 1000) -> list[PointRecord]:
    rng = np.random.default_rng(0)
    return [PointRecord(point_id("c", f"d{i}", 0), rng.random(8).astype(np.float32),
                        {"doc_id": f"d{i}", "source": source, "modality": "text",
                         "chunk_index": 0, "expires_at": expires + i}) for i in range(n)]


def test_point_ids_are_deterministic_and_distinct() -> None:
    assert point_id("c", "d", 0) == point_id("c", "d", 0)
    assert len({point_id("c", "d", 0), point_id("c", "d", 1), point_id("x", "d", 0)}) == 3


def test_upsert_is_idempotent_and_filters_work(store: VectorStore) -> None:
    ensure_collection(store, INFO)
    pts = _points(10)
    store.upsert("c", pts)
    store.upsert("c", pts)
    assert store.count("c") == 10
    assert store.count("c", Match(source="s")) == 10
    assert store.count("c", Match(source="other")) == 0
    ids = {pid for pid, _ in store.scan("c", Match(doc_ids=("d1", "d2")), ["doc_id"])}
    assert ids == {pts[1].id, pts[2].id}
    hits = store.search("c", pts[3].vector, 1, Match(modality="text"))
    assert hits[0].payload["doc_id"] == "d3"
    assert store.search("c", pts[3].vector, 1, Match(modality="image")) == []


def test_expiry_range_delete_never_touches_future_points(store: VectorStore) -> None:
    ensure_collection(store, INFO)
    store.upsert("c", _points(10, expires=1000))  # expires 1000..1009
    assert store.count_expired("c", 1004) == 5
    store.set_payload("c", [point_id("c", "d0", 0)], {"expires_at": 5000})
    store.delete_expired("c", 1004)
    left = {p["doc_id"] for _, p in store.scan("c", Match(), ["doc_id"])}
    assert left == {"d0", "d5", "d6", "d7", "d8", "d9"}


def test_a_collection_refuses_another_model(store: VectorStore) -> None:
    ensure_collection(store, INFO)
    other = CollectionInfo("c", "model-b", "b", 16, "cosine", "b")
    with pytest.raises(ModelMismatchError, match="model-a") as err:
        ensure_collection(store, other)
    assert "16-dim" in str(err.value) and "new collection" in str(err.value)
    assert ensure_collection(store, INFO) == INFO


def test_edge_store_is_locked_to_one_process_at_a_time(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path / "edge")
    ensure_collection(first, INFO)
    second = EdgeStore(tmp_path / "edge", lock_timeout=0.5)
    with pytest.raises(StoreLockedError, match="in use by another Tessera process"):
        second.count("c")
    first.close()
    assert second.count("c") == 0
    second.close()


def test_unreachable_server_is_a_clear_error() -> None:
    from tessera.errors import VectorStoreError

    with pytest.raises(VectorStoreError, match="cannot reach Qdrant at http://127.0.0.1:9") as err:
        ServerStore(StoreConfig(kind="qdrant", url="http://127.0.0.1:9", api_key="hunter2"))
    assert "hunter2" not in str(err.value)


def test_api_key_can_come_from_a_prefect_secret_block(tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from flows import config
    from flows.pipeline.store import open_store
    from tessera.errors import ConfigError, VectorStoreError

    Secret(value="from-block-key").save("tessera-test-qdrant-key", overwrite=True)
    assert config.secret_block("tessera-test-qdrant-key").get_secret_value() == "from-block-key"
    settings = config.load(None, home=str(tmp_path), store={
        "kind": "qdrant", "url": "http://127.0.0.1:9", "api_key_block": "tessera-test-qdrant-key"})
    assert settings.store.api_key is not None
    assert settings.store.api_key.get_secret_value() == "from-block-key"
    with pytest.raises(VectorStoreError, match="cannot reach Qdrant") as err:
        open_store(settings)
    assert "from-block-key" not in str(err.value)
    with pytest.raises(ConfigError, match="no Prefect Secret block"):
        config.load(None, home=str(tmp_path), store={
            "kind": "qdrant", "url": "http://127.0.0.1:9", "api_key_block": "no-such-block"})


def test_alias_switch_points_readers_at_the_new_collection(store: VectorStore) -> None:
    from flows.pipeline.store import resolve, switch_alias
    from tessera.errors import VectorStoreError

    ensure_collection(store, INFO)
    v2 = CollectionInfo("c2", "model-b", "b", 8, "cosine", "b")
    ensure_collection(store, v2)
    store.upsert("c2", [PointRecord(point_id("c2", "n", 0), np.ones(8, np.float32),
                                    {"doc_id": "n", "source": "s", "modality": "text"})])
    assert switch_alias(store, "live", "c") == {"alias": "live", "collection": "c", "previous": None}
    assert resolve(store, "live") == "c" and resolve(store, "c2") == "c2"
    assert switch_alias(store, "live", "c2")["previous"] == "c"
    assert store.aliases() == {"live": "c2"}
    assert store.search(resolve(store, "live"), np.ones(8, np.float32), 1)[0].payload["doc_id"] == "n"
    with pytest.raises(VectorStoreError, match="does not exist"):
        switch_alias(store, "live", "missing")
    with pytest.raises(VectorStoreError, match="cannot also be an alias"):
        switch_alias(store, "c", "c2")


def test_set_payload_where_touches_only_the_matching_source(store: VectorStore) -> None:
    ensure_collection(store, INFO)
    mine, theirs = _points(4, "s"), _points(2, "t")
    theirs = [PointRecord(point_id("c", f"t{i}", 0), p.vector, {**p.payload, "doc_id": f"t{i}"})
              for i, p in enumerate(theirs)]
    store.upsert("c", mine + theirs)
    store.set_payload_where("c", Match(source="s"), {"expires_at": 5000})
    got = {p["doc_id"]: p["expires_at"] for _, p in store.scan("c", Match(), ["doc_id", "expires_at"])}
    assert got == {"d0": 5000, "d1": 5000, "d2": 5000, "d3": 5000, "t0": 1000, "t1": 1001}
