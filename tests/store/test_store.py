"""Both store implementations behave the same: Qdrant Edge and qdrant-client (local mode)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tessera.core.errors import ModelMismatchError, StoreLockedError, VectorStoreError
from tessera.core.settings import StoreConfig
from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
from tessera.store import HnswParams, VectorStore, ensure_collection
from tessera.store.edge import EdgeStore
from tessera.store.server import ServerStore

pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore:Payload indexes have no effect")]

INFO = CollectionInfo("c", "model-a", "a", 8, "cosine", "a")


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
    from tessera.core.errors import VectorStoreError

    with pytest.raises(VectorStoreError, match="cannot reach Qdrant at http://127.0.0.1:9") as err:
        ServerStore(StoreConfig(kind="qdrant", url="http://127.0.0.1:9", api_key="hunter2"))
    assert "hunter2" not in str(err.value)


def test_api_key_can_come_from_a_prefect_secret_block(tmp_path: Path) -> None:
    from prefect.blocks.system import Secret

    from flows import config
    from tessera.core.errors import ConfigError, VectorStoreError
    from tessera.store import open_store

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
    from tessera.core.errors import VectorStoreError
    from tessera.store import resolve, switch_alias

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


@pytest.fixture
def sealing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seal after every ~16 KB written, sealing any appendable segment over 1 KB of vectors into
    segments of at most 16 KB: a few thousand points then go through many seals and merges."""
    from tessera.store.edge import tuning

    monkeypatch.setattr(tuning, "SEAL_BYTES", 16 * 1024)
    monkeypatch.setattr(tuning, "INDEXING_THRESHOLD_KB", 1)
    monkeypatch.setattr(tuning, "MAX_SEGMENT_KB", 16)


def _segments(root: Path) -> int:
    return len([p for p in (root / "c" / "shard" / "segments").iterdir() if p.is_dir()])


@pytest.mark.usefixtures("sealing")
def test_sealed_segments_keep_every_point_searchable_and_writable(tmp_path: Path) -> None:
    """Writes seal as they go (the shard reopened under the same lock): every point stays
    countable, findable by its own vector, updatable (a payload update moves it out of its sealed
    segment) and deletable; and all of it holds after a reopen."""
    root = tmp_path / "edge"
    store = EdgeStore(root)
    ensure_collection(store, INFO)
    pts = _points(3000)
    for start in range(0, len(pts), 100):
        store.upsert("c", pts[start:start + 100])
    assert store.count("c") == 3000 and _segments(root) > 3
    for p in pts[::250]:
        assert store.search("c", p.vector, 1)[0].id == p.id
    store.set_payload_where("c", Match(source="s"), {"expires_at": 5000})
    store.delete("c", [p.id for p in pts[:500]])
    store.close()

    store = EdgeStore(root)
    try:
        assert store.count("c") == 2500
        assert store.count_expired("c", 4999) == 0 and store.count_expired("c", 5000) == 2500
        assert {pid for pid, _ in store.scan("c", Match(), [])} == {p.id for p in pts[500:]}
        for p in pts[500::250]:
            assert store.search("c", p.vector, 1)[0].id == p.id
    finally:
        store.close()


SEALING_WRITER = """
import sys
from pathlib import Path
from tessera.store import ensure_collection
from tessera.store.edge import EdgeStore, tuning
from tests.store.test_store import INFO, _points
tuning.SEAL_BYTES, tuning.INDEXING_THRESHOLD_KB, tuning.MAX_SEGMENT_KB = 16 * 1024, 1, 16
store = EdgeStore(Path(sys.argv[1]))
ensure_collection(store, INFO)
pts = _points(20000)
for start in range(0, len(pts), 100):
    store.upsert("c", pts[start:start + 100])
    Path(sys.argv[2]).write_text(str(start + 100))  # acknowledged so far
"""


def test_sigkill_while_sealing_loses_no_acknowledged_point(tmp_path: Path) -> None:
    """A writer that seals every few batches is SIGKILLed mid-run: the shard reopens with every
    point it had acknowledged, each findable by its vector."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.paths import REPO

    root, acked = tmp_path / "edge", tmp_path / "acked"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", SEALING_WRITER, str(root), str(acked)],
                             env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (acked.exists() and int(acked.read_text() or 0) >= 3000):
        assert child.poll() is None, child.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the writer never got 3,000 points in"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()  # type: ignore[union-attr]
    done = int(acked.read_text())
    assert _segments(root) > 3  # it did seal
    store = EdgeStore(root)
    try:
        n = store.count("c")
        assert n >= done
        pts = _points(n)
        assert {pid for pid, _ in store.scan("c", Match(), [])} == {p.id for p in pts}
        for p in pts[::500]:
            assert store.search("c", p.vector, 1)[0].id == p.id
    finally:
        store.close()


@pytest.mark.usefixtures("sealing")
def test_a_shard_from_an_earlier_release_is_never_optimized_by_a_writer(tmp_path: Path) -> None:
    """Without the sealing layout's marker (a shard created before it), writes and close leave
    the segments as the engine appended them: its default optimizer would build an HNSW graph
    over the whole appendable segment in memory."""
    root = tmp_path / "edge"
    store = EdgeStore(root)
    ensure_collection(store, INFO)
    (root / "c" / "sealed-layout").unlink()
    before = _segments(root)
    pts = _points(3000)
    for start in range(0, len(pts), 100):
        store.upsert("c", pts[start:start + 100])
    store.close()
    assert _segments(root) == before
    store = EdgeStore(root)
    try:
        assert store.count("c") == 3000
        assert store.index_params("c") is None
        with pytest.raises(VectorStoreError, match="earlier release.*tessera alias"):
            store.build_index("c", HnswParams(16, 100))
        assert _segments(root) == before
    finally:
        store.close()


def _graphs(root: Path) -> list[int]:
    """The HNSW m of every sealed segment, as the engine recorded it when it built the index."""
    return sorted(json.loads(f.read_text())["m"]
                  for f in (root / "c" / "shard" / "segments").glob("*/vector_index-a/hnsw_config.json"))


@pytest.mark.usefixtures("sealing")
def test_sealed_segments_get_the_configured_graph_and_optimize_rebuilds_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A new collection's sealed segments are built with the store's HNSW m. A store configured
    with another m says so at ingest and leaves the segments alone; build_index rebuilds every
    one (under the writer lock, publishing a new generation for readers) and loses no point."""
    from tessera.store.edge import tuning

    monkeypatch.setattr(tuning, "FULL_SCAN_KB", 1)  # a graph even for these tiny segments
    root = tmp_path / "edge"
    store = EdgeStore(root, hnsw=HnswParams(0, 100))
    ensure_collection(store, INFO)
    pts = _points(3000)
    for start in range(0, len(pts), 100):
        store.upsert("c", pts[start:start + 100])
    store.close()
    built = _graphs(root)
    assert len(built) > 3 and set(built) == {0}

    store = EdgeStore(root, hnsw=HnswParams(16, 64))
    with caplog.at_level("WARNING"):
        ensure_collection(store, INFO)
    assert "m=0" in caplog.text and "tessera optimize --collection c" in caplog.text
    store.upsert("c", _points(3100)[3000:])
    store.close()
    assert 16 not in _graphs(root)  # writes keep the collection's graph

    generation = store.generation("c")
    result = store.build_index("c", HnswParams(16, 64))
    assert result["points"] == 3100 and result["hnsw_m"] == 16
    assert set(_graphs(root)) == {16} and store.index_params("c") == HnswParams(16, 64)
    assert store.generation("c") != generation
    store = EdgeStore(root, hnsw=HnswParams(16, 64))
    try:
        assert store.count("c") == 3100
        for p in pts[::150]:
            assert store.search("c", p.vector, 1)[0].id == p.id
    finally:
        store.close()


def test_tessera_optimize_rebuilds_the_configured_graph_and_refuses_an_unknown_collection(
        tmp_path: Path, make_config: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    root = tmp_path / "edge"
    store = EdgeStore(root, hnsw=HnswParams(0, 100))
    ensure_collection(store, INFO)
    store.upsert("c", _points(300))
    store.close()
    config = make_config(store={"path": str(root), "hnsw_m": 8, "hnsw_ef_construct": 40})
    assert main(["optimize", "--config", str(config), "--collection", "c", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["hnsw_m"], out["ef_construct"], out["points"]) == (8, 40, 300)
    assert out["before"] == {"m": 0, "ef_construct": 100}
    assert EdgeStore(root).index_params("c") == HnswParams(8, 40)
    assert main(["optimize", "--config", str(config), "--collection", "nope", "--json"]) == 2
    assert "'nope' does not exist" in json.loads(capsys.readouterr().out)["message"]
