"""Snapshots that share a shard's sealed files: the engine never writes those in place, and a
reader under a writer that upserts, deletes, seals and is SIGKILLed sees, for every snapshot, the
shard exactly as the writer left it at that generation, from the first search to the last."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from tessera.core.types import Match
from tessera.service.shard_copy import (
    CLOSED_WAL,
    WRITE_ONCE,
    sealed_segments,
    shareable,
    snapshot_shard,
)
from tessera.service.snapshot import SnapshotReader
from tessera.store.edge import EdgeStore, tuning
from tests.support import shards
from tests.support.paths import REPO

TINY = (64 * 1024, 100, 400)  # SEAL_BYTES, INDEXING_THRESHOLD_KB, MAX_SEGMENT_KB: many seals


@pytest.fixture
def tiny_seals(monkeypatch: pytest.MonkeyPatch) -> None:
    for attr, value in zip(("SEAL_BYTES", "INDEXING_THRESHOLD_KB", "MAX_SEGMENT_KB"), TINY,
                           strict=True):
        monkeypatch.setattr(tuning, attr, value)


def _sealed(tmp_path: Path, points: int) -> Path:
    """A collection of `points` points written in ingest-sized batches (sealing as it goes);
    returns the store's root."""
    root = tmp_path / "edge"
    store = EdgeStore(root)
    store.create_collection(shards.collection())
    for lo in range(0, points, 150):
        store.upsert("c", shards.points(range(lo, min(lo + 150, points))))
    store.close()
    assert shareable(root / "c" / "shard")
    return root


def _files(shard: Path) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_ino, hashlib.md5(p.read_bytes()).hexdigest())
            for p in shard.rglob("*") if p.is_file()}


@pytest.mark.slow  # ~45 s: seven kinds of write, each with its seals and merges
@pytest.mark.usefixtures("tiny_seals")
def test_no_file_a_snapshot_links_is_ever_written_in_place(tmp_path: Path) -> None:
    """Every write a collection sees (new points, deletes, re-upserts, a payload update of all,
    seals and merges, an explicit optimize): no file `shareable` picks changes while keeping its
    inode. If an engine upgrade starts writing one of them in place, this fails first."""
    root = _sealed(tmp_path, 1500)
    shard = root / "c" / "shard"
    assert len(sealed_segments(shard)) >= 5
    steps = [lambda s: s.upsert("c", shards.points(range(1500, 1600))),
             lambda s: s.delete("c", [shards.pid(i) for i in range(0, 750, 37)]),
             lambda s: s.upsert("c", shards.points(range(300, 400), version=1)),
             lambda s: s.set_payload_where("c", Match(source="s"), {"expires_at": 123}),
             lambda s: [s.upsert("c", shards.points(range(lo, lo + 150), version=2))
                        for lo in range(600, 1200, 150)],
             lambda s: s.delete("c", [shards.pid(i) for i in range(750, 1500, 3)]),
             lambda s: s.optimize("c")]
    checked = 0
    for step in steps:
        share, before = shareable(shard), _files(shard)
        store = EdgeStore(root)
        step(store)
        store.close()
        after = _files(shard)
        for path in share:
            if path in after and after[path][0] == before[path][0]:
                assert after[path][1] == before[path][1], f"written in place: {path}"
                checked += 1
    assert checked > 500


@pytest.mark.slow  # ~30 s: 80 MB written through the WAL
def test_a_closed_wal_segment_is_never_written_again(tmp_path: Path) -> None:
    """The WAL's 32 MiB segments: once one is closed (full), writes go to the next, and a flush
    only deletes closed segments it no longer needs. Over upserts that close two, deletes, a
    re-upsert and the flushes at each close, every closed segment that keeps its inode keeps its
    bytes, and a snapshot links them."""
    root = tmp_path / "edge"
    wal = root / "c" / "shard" / "wal"
    store = EdgeStore(root)
    store.create_collection(shards.collection())
    seen: dict[Path, tuple[int, str]] = {}
    checked = 0
    for lo in range(0, 16_000, 2000):
        store.upsert("c", shards.points(range(lo, lo + 2000)))
        if lo % 4000 == 0:
            store.delete("c", [shards.pid(i) for i in range(lo, lo + 2000, 7)])
            store.upsert("c", shards.points(range(lo, lo + 300), version=1))
        now = {p: v for p, v in _files(wal).items() if CLOSED_WAL.match(p.name)}
        for path, (inode, digest) in now.items():
            if seen.get(path, (None,))[0] == inode:
                assert seen[path][1] == digest, f"written in place: {path}"
                checked += 1
        seen = now
        if lo % 6000 == 0:
            store.close()  # a flush may delete closed segments: never rewrite them
            store = EdgeStore(root)
    assert checked >= 2 and seen
    copy = snapshot_shard(root / "c" / "shard", tmp_path / "snap")
    assert {Path(p).name for p in copy.linked} >= {p.name for p in seen}
    store.close()


@pytest.mark.usefixtures("tiny_seals")
def test_a_snapshot_links_the_sealed_bulk_and_copies_the_rest(tmp_path: Path) -> None:
    shard = _sealed(tmp_path, 2000) / "c" / "shard"
    copy = snapshot_shard(shard, tmp_path / "snap")
    linked = {Path(p).relative_to(tmp_path / "snap") for p in copy.linked}
    assert linked == {p.relative_to(shard) for p in shareable(shard)} and linked
    for rel in linked:
        assert (shard / rel).stat().st_ino == (tmp_path / "snap" / rel).stat().st_ino
        assert (CLOSED_WAL.match(rel.name) if rel.parts[0] == "wal"
                else WRITE_ONCE.match(rel.relative_to(Path(*rel.parts[:2])).as_posix()))
    kinds = {rel.name for rel in linked}
    assert {"matrix.dat", "inverted_index.dat", "page_0.dat"} <= kinds
    assert not kinds & {"id_tracker.versions", "id_tracker.deleted", "segment.json"}
    assert copy.copied_files + len(copy.linked) == len(_files(shard))


@pytest.mark.usefixtures("tiny_seals")
def test_where_links_fail_a_snapshot_copies_every_file(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another file system (EXDEV): the same snapshot, all copies, one reason recorded."""
    import errno

    root = _sealed(tmp_path, 600)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    copy = snapshot_shard(root / "c" / "shard", tmp_path / "snap")
    assert not copy.linked and copy.link_failed and "cross-device" in copy.link_failed
    assert copy.copied_files == len(_files(root / "c" / "shard"))


WRITER = """
import json, sys, time
from pathlib import Path
from tessera.store.edge import EdgeStore, tuning
from tests.support import shards
tuning.SEAL_BYTES, tuning.INDEXING_THRESHOLD_KB, tuning.MAX_SEGMENT_KB = {tiny}
root, out = Path(sys.argv[1]), Path(sys.argv[2])
state = {{}}  # id -> version, as the shard holds it
store = EdgeStore(root)
store.create_collection(shards.collection())
nxt = 0
for rnd in range(10_000):
    if rnd:
        store = EdgeStore(root)
    fresh = range(nxt, nxt + 120)
    nxt += 120
    after_new = {{**state, **{{i: 0 for i in fresh}}}}
    gone = sorted(after_new)[rnd % 7::11][:15]
    after_gone = {{i: v for i, v in after_new.items() if i not in gone}}
    again = sorted(after_gone)[rnd % 5::9][:25]
    state = {{**after_gone, **{{i: rnd + 1 for i in again}}}}
    (out / "plan.json").write_text(json.dumps([after_new, after_gone, state]))
    store.upsert("c", shards.points(fresh))
    (out / "writing").write_text(str(rnd))  # the shard is open and changed: a kill lands mid-write
    store.delete("c", [shards.pid(i) for i in gone])
    store.upsert("c", shards.points(again, version=rnd + 1))
    store.close()  # seals what was appended, then publishes a generation
    generation = EdgeStore(root).generation("c")
    (out / f"{{generation}}.json").write_text(json.dumps(state))
    (out / "rounds").write_text(str(rnd + 1))
    time.sleep(0.05)
"""


def _rounds(out: Path) -> int:
    try:
        return int((out / "rounds").read_text())
    except (OSError, ValueError):
        return 0


def _wait(check: object, what: str, child: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert child.poll() is None, child.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _ids(state: dict[str, int]) -> dict[str, int]:
    return {shards.pid(int(i)): v for i, v in state.items()}


def _seen(store: EdgeStore) -> dict[str, int]:
    """What a snapshot holds: every point's version, each findable by its own vector."""
    held = dict(store.scan("c", Match(), ["v", "doc_id"]))
    for pid, payload in list(held.items())[::40]:
        found = store.search("c", shards.vector(int(payload["doc_id"][1:]), payload["v"]), 1)
        assert found[0].id == pid
    return {pid: payload["v"] for pid, payload in held.items()}


@pytest.mark.slow  # ~30 s: six generations held across the writer's rounds, then a kill
def test_snapshots_under_a_writer_that_upserts_deletes_seals_and_is_killed(
        tmp_path: Path) -> None:
    """A child writer changes the shard in rounds (120 new points, 15 deletes, 25 re-upserts
    with a new version, a seal at each close) and records the shard's contents at each generation
    it publishes. The reader holds each snapshot open across the writer's next rounds and checks
    it twice, at its first search and after the writer moved on; then the writer is SIGKILLed
    mid-round and the reader keeps answering from the last generation it published."""
    root, out = tmp_path / "edge", tmp_path / "expected"
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(tiny=TINY), str(root), str(out)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE)
    reader = SnapshotReader(root, tmp_path / "snaps", check_seconds=0.01)
    checked: set[str] = set()
    try:
        _wait(lambda: _rounds(out) >= 2, "the writer never finished two rounds", child)
        while len(checked) < 6:
            with reader.reading("c") as store:
                generation = store.generation("c")
                want = _ids(json.loads((out / f"{generation}.json").read_text()))
                assert _seen(store) == want, "the snapshot differs from its generation"
                moved_on = partial(lambda at: _rounds(out) >= at + 2, _rounds(out))
                _wait(moved_on, "the writer stalled", child)
                assert _seen(store) == want, "the snapshot changed under its reader"
            checked.add(generation)
        assert reader.last_take["linked_files"] > 0, "no snapshot shared a sealed file"
        assert len(sealed_segments(root / "c" / "shard")) >= 3
        rounds = _rounds(out)
        _wait(lambda: (out / "writing").read_text() == str(rounds), "no round began", child)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        last = EdgeStore(root).generation("c")
        published = _ids(json.loads((out / f"{last}.json").read_text()))
        killed_round = [_ids(state) for state in json.loads((out / "plan.json").read_text())]
        deadline = time.monotonic() + 60
        while reader.generation("c") != last:  # the reader catches up, in the background
            assert time.monotonic() < deadline, "no snapshot of the last generation"
            with reader.reading("c"):
                time.sleep(0.02)
        with reader.reading("c") as store:
            assert store.generation("c") == last
            # What the last close published, or (a snapshot taken after the kill) that plus the
            # killed round's acknowledged steps: never a state the writer did not pass through.
            assert _seen(store) in [published, *killed_round]
        live = EdgeStore(root)
        try:
            assert _seen(live) in killed_round  # the killed round's acknowledged writes survive
        finally:
            live.close()
        assert reader.torn == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()  # type: ignore[union-attr]
        reader.close()
