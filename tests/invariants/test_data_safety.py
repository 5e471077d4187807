"""Data safety: the faults a probe and a review found (issue 17), each tried the way it was found.

Ad-hoc ingests that clashed with declared sources, a server store that wrote to memory, a full
disk, a read-only home, a JSON bomb, documents that turned invalid, a killed run, `auto` never
reaching Modal, engine errors that were retried, an outage that looked like an empty store,
events that dropped columns, two creators of one collection, and the dbt invariant at warn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.core.errors import ConfigError, StoreLockedError, UsageError, VectorStoreError
from tessera.core.events import EventLog, read_events
from tessera.core.settings import Settings, StoreConfig, load_settings
from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
from tessera.ingest.run import run_ingest
from tessera.service.search import search
from tessera.store import ensure_collection, open_store
from tessera.store.edge import EdgeStore
from tests.support.machine import fill, home_config, run_cli, tmpfs
from tests.support.paths import REPO

INFO = CollectionInfo("c", "model-a", "a", 8, "cosine", "a")


def _points(settings: Settings, collection: str = "test") -> list[dict[str, Any]]:
    store = open_store(settings)
    try:
        return [p for _, p in store.scan(collection, Match(), ["doc_id", "source", "text"])]
    finally:
        store.close()


def _docs(folder: Path, n: int, word: str = "note") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{word}{i}.txt").write_text(f"{word} {i}: tides, magma and photosynthesis.")
    return folder


# ------------------------------------------------------------------ 2. ad-hoc runs and names


def test_an_adhoc_ingest_never_touches_a_declared_source_with_the_same_name(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    declared = _docs(tmp_path / "data" / "long", 5)
    config = make_config(sources=[{"name": "long", "path": str(declared)}])
    settings = load_settings(config)
    assert run_ingest(settings)["indexed"] == 5

    elsewhere = _docs(tmp_path / "x" / "long", 1, word="other")
    adhoc = run_ingest(settings, path=str(elsewhere))
    assert (adhoc["indexed"], adhoc["deleted"]) == (1, 0)
    by_source: dict[str, set[str]] = {}
    for p in _points(settings):
        by_source.setdefault(p["source"], set()).add(p["doc_id"])
    assert len(by_source["long"]) == 5
    (adhoc_name,) = set(by_source) - {"long"}
    assert adhoc_name.startswith("adhoc-long-")

    again = run_ingest(settings)  # the declared run must not delete the ad-hoc document
    assert (again["unchanged"], again["deleted"]) == (5, 0)
    assert len(_points(settings)) == 6


def test_path_with_source_must_be_inside_it_and_deletes_nothing(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    declared = _docs(tmp_path / "docs", 4)
    _docs(declared / "sub", 2, word="deep")
    settings = load_settings(make_config(sources=[{"name": "docs", "path": str(declared)}]))
    assert run_ingest(settings)["indexed"] == 6
    (declared / "sub" / "deep0.txt").write_text("deep 0 changed")
    sub = run_ingest(settings, sources=["docs"], path=str(declared / "sub"))
    assert (sub["seen"], sub["indexed"], sub["unchanged"], sub["deleted"]) == (2, 1, 1, 0)
    assert len(_points(settings)) == 6
    with pytest.raises(UsageError, match="not inside source 'docs'"):
        run_ingest(settings, sources=["docs"], path=str(_docs(tmp_path / "outside", 1)))
    with pytest.raises(UsageError, match="does not exist"):
        run_ingest(settings, path=str(tmp_path / "missing"))


# ------------------------------------------------------------------ 3. a server store nowhere


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_a_server_store_without_url_or_path_is_refused_at_start(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="store.url") as err:
        load_settings(make_config(store={"kind": "qdrant"}))
    assert ":memory:" in str(err.value)
    from tessera.store.server import ServerStore

    with pytest.raises(ConfigError):
        ServerStore(StoreConfig(kind="qdrant"))
    memory = ServerStore(StoreConfig(kind="qdrant", path=Path(":memory:")))
    ensure_collection(memory, INFO)
    assert memory.list_collections() == ["c"]
    memory.close()


# ------------------------------------------------------------------ 4 and 8. full disk, read-only


@pytest.mark.slow
def test_a_full_disk_is_refused_with_a_message_and_readers_still_open_the_home(
        make_config: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", 400) as disk:
        config = home_config(make_config, disk / "home", corpus)
        first = run_cli("ingest", "--config", str(config), "--json")
        assert first.returncode == 0, first.stderr[-2000:]
        filler = fill(disk, leave_mb=24)
        (corpus / "tides.txt").write_text("The tides changed while the disk was full.")
        full = run_cli("ingest", "--config", str(config), "--json")
        assert full.returncode == 2, (full.returncode, full.stderr[-2000:])  # not 135 (SIGBUS)
        error = json.loads(full.stdout)
        assert error["error"] == "DiskSpaceError"
        assert "MiB free" in error["message"] and str(disk) in error["message"]
        reader = run_cli("status", "--config", str(config), "--json")
        assert reader.returncode in (0, 2), reader.stderr[-2000:]  # an answer, never a crash
        filler.unlink()
        for args in (["status"], ["search", "the moon pulls the sea"]):
            done = run_cli(*args, "--config", str(config), "--json")
            assert done.returncode == 0, done.stderr[-2000:]
        hits = json.loads(run_cli("search", "moon and the sea", "--config", str(config),
                                  "--json").stdout)["results"]
        assert hits and hits[0]["doc_id"] == "docs/tides.txt"
        again = json.loads(run_cli("ingest", "--config", str(config), "--json").stdout)
        assert again["indexed"] == 1  # the change the full disk refused goes in now


@pytest.mark.slow
def test_readers_work_on_a_read_only_home_and_writers_say_why_not(
        make_config: Callable[..., Path], corpus: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", 400) as disk:
        config = home_config(make_config, disk / "home", corpus)
        assert run_cli("ingest", "--config", str(config), "--json").returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        status = run_cli("status", "--config", str(config), "--json")
        assert status.returncode == 0, status.stderr[-2000:]
        assert json.loads(status.stdout)["collections"][0]["points"] == 9
        found = run_cli("search", "cold tomato soup", "--config", str(config), "--json")
        assert found.returncode == 0, found.stderr[-2000:]
        assert json.loads(found.stdout)["results"][0]["doc_id"] == "docs/recipes.jsonl#gazpacho"
        assert "Traceback" not in status.stderr + found.stderr
        writer = run_cli("ingest", "--config", str(config), "--json")
        assert writer.returncode == 2 and "Traceback" not in writer.stderr
        assert "read-only" in json.loads(writer.stdout)["message"]


# ------------------------------------------------------------------ 5. one bad record


def test_a_deeply_nested_record_is_quarantined_and_the_rest_indexed(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    bomb = "[" * 200_000 + "]" * 200_000
    (src / "mixed.jsonl").write_text(
        '{"id": "a", "text": "the first good record"}\n'
        f'{{"id": "b", "text": {bomb}}}\n'
        '{"id": "c", "text": "the last good record"}\n')
    (src / "bomb.json").write_text(bomb)
    (src / "fine.txt").write_text("an ordinary file beside them")
    settings = load_settings(make_config(sources=[{"name": "s", "path": str(src)}]))
    summary = run_ingest(settings)
    assert (summary["seen"], summary["indexed"], summary["quarantined"]) == (5, 3, 2)
    reasons = [r["reason"] for r in read_events(settings.events_dir, "quarantine")]
    assert sum("nested too deeply" in r for r in reasons) == 2


# ------------------------------------------------------------------ 6. a document turns invalid


@pytest.mark.parametrize(("policy", "searchable", "previous"),
                         [("remove", False, "removed"), ("keep_last_good", True, "kept")])
def test_a_document_that_turns_invalid_follows_its_sources_policy(
        make_config: Callable[..., Path], corpus: Path, policy: str, searchable: bool,
        previous: str, minilm: Any) -> None:
    settings = load_settings(make_config(sources=[
        {"name": "docs", "path": str(corpus), "on_invalid": policy}]))
    run_ingest(settings)
    (corpus / "tides.txt").write_text("")
    second = run_ingest(settings)
    assert second["quarantined"] == 1
    held = {p["doc_id"] for p in _points(settings)}
    assert ("docs/tides.txt" in held) is searchable
    hits = search(settings, query="the moon pulls the sea up and down", k=3, backend=minilm)
    assert ("docs/tides.txt" in [h["doc_id"] for h in hits]) is searchable
    (row,) = [r for r in read_events(settings.events_dir, "quarantine")
              if r["run_id"] == second["run_id"]]
    assert row["previous_version"] == previous and previous in row["reason"]


# ------------------------------------------------------------------ 7. a killed run


@pytest.mark.slow
def test_a_killed_cli_run_leaves_no_process_behind_and_a_trace_in_the_events(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = _docs(tmp_path / "many", 3000)
    config = make_config(sources=[{"name": "many", "path": str(src)}])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PYTHONPATH"] = str(REPO)
    child = subprocess.Popen([sys.executable, "-m", "tessera.cli.main", "ingest", "--config",
                              str(config), "--json"], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = load_settings(config).events_dir
    deadline = time.monotonic() + 240
    while not list((events / "documents_indexed").glob("*.parquet")):
        assert child.poll() is None and time.monotonic() < deadline, "no batch finished"
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    deadline = time.monotonic() + 1.0  # what the rest of its group gets to follow it out
    with suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(child.pid, 0)  # raises once no process of the group is left
            time.sleep(0.05)
    with pytest.raises(ProcessLookupError):  # nothing of its process group is left running
        os.killpg(child.pid, 0)
    starts = [r for r in read_events(events, "ingest_batches") if r["stage"] == "start"]
    assert [r["source"] for r in starts] == ["many"]
    assert read_events(events, "documents_indexed")  # the finished batch's documents
    assert not read_events(events, "ingest_runs")  # and no summary: the run never ended


# ------------------------------------------------------------------ 9. auto routes to Modal


class _FakeModal:
    """The deployed Embedder at the network boundary: `.map` runs the real local model."""

    def __init__(self, local: Any) -> None:
        self.local, self.calls, self.batches = local, 0, 0

    def __call__(self, **params: Any) -> Any:
        return self

    @property
    def embed(self) -> Any:
        return self

    def map(self, batches: Any, kwargs: Any = None, order_outputs: bool = True,
            return_exceptions: bool = False) -> Any:
        self.calls += 1
        batches = list(batches)
        self.batches += len(batches)
        return [{"vectors": self.local.embed_texts(list(b)), "seconds": 0.5, "device": "cuda",
                 "gpu": "L4"} for b in batches]


def test_auto_routes_a_large_backlog_to_modal(make_config: Callable[..., Path], corpus: Path,
                                              minilm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import modal_backend

    fake = _FakeModal(minilm)
    monkeypatch.setattr(modal_backend, "modal_lookup", lambda app, cls: fake)
    small = load_settings(make_config(sources=[{"name": "docs", "path": str(corpus)}],
                                      embedding={"backend": "auto", "modal_threshold_chunks": 5}))
    summary = run_ingest(small)
    assert summary["chunks_embedded"] == 9 and fake.calls >= 1
    (row,) = read_events(small.events_dir, "ingest_runs")
    assert (row["backend"], row["gpu_type"], row["gpu_seconds"]) == ("modal", "L4", 0.5 * fake.batches)
    big = load_settings(make_config(sources=[{"name": "docs", "path": str(corpus)}],
                                    name="big.toml", home=str(corpus.parent / "home2"),
                                    embedding={"backend": "auto", "modal_threshold_chunks": 5000}))
    calls = fake.calls
    run_ingest(big)
    assert fake.calls == calls  # under the threshold it stays local


# ------------------------------------------------------------------ 10. engine errors


def test_engine_errors_are_ours_and_not_retried(tmp_path: Path) -> None:
    from tessera.core.steps import PlainSteps

    store = EdgeStore(tmp_path / "edge")
    ensure_collection(store, INFO)
    wrong = [PointRecord(point_id("c", "d", 0), np.ones(3, np.float32), {"doc_id": "d"})]
    slept: list[float] = []
    start = time.monotonic()
    with pytest.raises(VectorStoreError, match="could not write 1 points in collection 'c'"):
        PlainSteps(sleep=slept.append).run("upsert", store.upsert, "c", wrong, io=True)
    assert slept == [] and time.monotonic() - start < 2
    with pytest.raises(VectorStoreError):
        store.delete("c", ["not-a-uuid"])
    store.close()
    (tmp_path / "edge" / "c" / "tessera.json").write_text("{not json")
    with pytest.raises(VectorStoreError, match="cannot be read.*delete"):
        EdgeStore(tmp_path / "edge").get_collection("c")
    (tmp_path / "edge" / "aliases.json").write_text("[1, 2")
    with pytest.raises(VectorStoreError, match="alias table"):
        EdgeStore(tmp_path / "edge").aliases()


# ------------------------------------------------------------------ 11. an outage is not empty


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_a_server_outage_fails_prune_instead_of_reporting_nothing_to_do(
        make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qdrant_client.http.exceptions import ResponseHandlingException

    from tessera.core.errors import StoreUnavailableError
    from tessera.jobs.prune import run_prune

    settings = load_settings(make_config(store={"kind": "qdrant", "path": str(tmp_path / "q")}))
    store = open_store(settings)
    ensure_collection(store, INFO)
    store.close()

    def down(self: Any, name: str) -> bool:
        raise ResponseHandlingException(ConnectionError("connection refused"))

    monkeypatch.setattr("qdrant_client.QdrantClient.collection_exists", down)
    slept: list[float] = []
    from tessera.core.steps import PlainSteps

    with pytest.raises(StoreUnavailableError, match="retrying may help"):
        run_prune(settings, PlainSteps(sleep=slept.append))
    assert slept == [2.0, 5.0, 15.0]  # transient: retried, then reported


# ------------------------------------------------------------------ 12. events keep every column


def test_an_event_with_an_unknown_column_is_refused(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "r")
    with pytest.raises(KeyError, match="no column 'colection'"):
        log.add("prune_runs", colection="c", expired=1)


# ------------------------------------------------------------------ 13. two creators


def test_a_second_creator_waits_for_the_lock_before_touching_the_shard(tmp_path: Path) -> None:
    from tessera.core.fs import HeldLock

    root = tmp_path / "edge"
    half_made = root / "c" / "shard"
    half_made.mkdir(parents=True)
    (half_made / "in-progress").write_text("the first creator is writing this")
    first = HeldLock(root / "c" / ".lock", 1)  # the first creator, mid-way
    try:
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):
            EdgeStore(root, lock_timeout=0.3).create_collection(INFO)
        assert (half_made / "in-progress").exists()
    finally:
        first.release()
    second = EdgeStore(root)
    second.create_collection(INFO)  # once free, a crashed half-made shard is replaced
    assert second.count("c") == 0 and not (half_made / "in-progress").exists()
    second.close()


# ------------------------------------------------------------------ 14. one giant word


def test_a_giant_word_is_cut_into_small_points_that_do_not_top_other_queries(
        make_config: Callable[..., Path], corpus: Path, minilm: Any) -> None:
    word = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(200_000))
    (corpus / "blob.txt").write_text(word)
    settings = load_settings(make_config(sources=[{"name": "docs", "path": str(corpus)}]))
    run_ingest(settings)
    blob = [p for p in _points(settings) if p["doc_id"] == "docs/blob.txt"]
    assert len(blob) > 10 and max(len(p["text"]) for p in blob) <= 254 * 32
    for query, expected in (("how do plants make oxygen from sunlight", "docs/photosynthesis.md"),
                            ("cold tomato soup", "docs/recipes.jsonl#gazpacho")):
        assert search(settings, query=query, k=1, backend=minilm)[0]["doc_id"] == expected


# ------------------------------------------------------------------ 15. a run of several sources


def test_a_run_of_several_sources_records_each_collection(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    settings = load_settings(make_config(sources=[
        {"name": "a", "path": str(_docs(tmp_path / "a", 2))},
        {"name": "b", "path": str(_docs(tmp_path / "b", 2, word="memo")), "collection": "other"}]))
    run_ingest(settings)
    (row,) = read_events(settings.events_dir, "ingest_runs")
    # The real collections, each behind the alias its source declares.
    assert row["sources"] == "a,b"
    assert [c.split("--")[0] for c in row["collection"].split(",")] == ["test", "other"]
    assert row["model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
