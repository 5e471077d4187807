"""Scale: records streamed past the old whole-file limit, duplicate ids found however far apart,
the on-disk diff state (lost, damaged, left open by a killed run), and the quick stat check."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tessera.core.events import read_events
from tessera.core.settings import Settings, load_settings
from tessera.core.types import Match
from tessera.ingest.run import run_ingest
from tessera.ingest.state import DiffState, state_path
from tessera.store import open_store
from tests.support.machine import kill_when_marked
from tests.support.paths import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")


def _settings(make_config: Callable[..., Path], src: Path, **options: Any) -> Settings:
    source: dict[str, Any] = {"name": "src", "path": str(src)}
    if options:
        source["options"] = options
    return load_settings(make_config(sources=[source]))


def _points(settings: Settings) -> int:
    store = open_store(settings)
    try:
        return store.count("test", Match(source="src"))
    finally:
        store.close()


def _live(settings: Settings) -> str:
    """The collection behind the alias `test`: diff states are kept per real collection."""
    store = open_store(settings)
    try:
        return store.real_name("test")
    finally:
        store.close()


def _state_agrees(settings: Settings) -> None:
    """The state is clean and accounts for exactly the points the index holds."""
    live = _live(settings)
    state = DiffState(state_path(settings.home, live, "src"), live, "src")
    try:
        points = _points(settings)
        assert state.problem(points) is None
        assert state.count_points() == points
    finally:
        state.close()


def _quarantine(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return [r for r in read_events(settings.events_dir, "quarantine") if r["run_id"] == run_id]


def test_structured_files_stream_and_the_limit_is_per_record(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    lines = [json.dumps({"id": f"j{i}", "text": f"Record {i} of a long export."}) for i in range(400)]
    lines[200] = json.dumps({"id": "big", "text": "word " * 500})  # 2.5 KB: over the limit
    (src / "export.jsonl").write_text("\n".join(lines) + "\n")
    rows = [{"id": f"c{i}", "text": f"Row {i} of a table, with a comma, and quotes \"x\"."}
            for i in range(150)]
    pd.DataFrame(rows).to_csv(src / "table.csv", index=False)
    pd.DataFrame(rows).assign(id=lambda f: "p" + f["id"]).to_parquet(src / "table.parquet")
    (src / "long.txt").write_text("A whole file is still one document. " * 100)  # 3.7 KB
    settings = _settings(make_config, src, max_file_bytes=2000)
    for name in ("export.jsonl", "table.csv", "table.parquet"):
        assert (src / name).stat().st_size > 2000  # each file is over the limit, its records not

    summary = run_ingest(settings)

    assert summary["indexed"] == 399 + 150 + 150 and summary["quarantined"] == 2
    reasons = {r["doc_id"]: r for r in _quarantine(settings, summary["run_id"])}
    big = reasons["src/export.jsonl#error200"]
    assert big["expectation"] == "record_size_within_limit" and "line 201" in big["reason"]
    assert "per-record limit of 2,000 bytes" in big["reason"]
    assert reasons["src/long.txt"]["expectation"] == "file_size_within_limit"


@pytest.mark.slow
def test_duplicate_id_5000_records_apart_is_quarantined_and_the_rerun_is_stable(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    records = [{"id": f"r{i}", "text": f"Entry {i}."} for i in range(5_100)]
    records[6] = {"id": "twin", "text": "The first record with this id."}
    records[5_006] = {"id": "twin", "text": "The second record with this id, 5,000 lines on."}
    (src / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = _settings(make_config, src)

    first = run_ingest(settings)
    second = run_ingest(settings)

    assert (first["seen"], first["indexed"], first["quarantined"]) == (5_100, 5_098, 2)
    rows = _quarantine(settings, first["run_id"])
    assert [r["doc_id"] for r in rows] == ["src/log.jsonl#twin"] * 2
    assert {r["uri"].rsplit("#", 1)[1] for r in rows} == {"line=7", "line=5007"}
    for row in rows:
        assert row["expectation"] == "doc_id_unique" and "lines 7, 5007" in row["reason"]
    assert (second["seen"], second["chunks_embedded"], second["indexed"]) == (5_100, 0, 0)
    assert (second["unchanged"], second["quarantined"]) == (5_098, 2)
    store = open_store(settings)
    try:
        assert store.count("test", Match(doc_ids=("src/log.jsonl#twin",))) == 0
    finally:
        store.close()
    _state_agrees(settings)


def _small_corpus(src: Path, n: int) -> None:
    src.mkdir()
    for i in range(n):
        (src / f"note{i:03d}.txt").write_text(f"Note {i}: the tide turns at {i % 12} o'clock.")


def test_a_lost_or_damaged_diff_state_is_rebuilt_from_the_index(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    _small_corpus(src, 30)
    settings = _settings(make_config, src)
    first = run_ingest(settings)
    path = state_path(settings.home, _live(settings), "src")
    assert first["indexed"] == 30 and first["diff_state_rebuilt"] == [] and path.exists()

    path.unlink()
    lost = run_ingest(settings)
    assert (lost["chunks_embedded"], lost["unchanged"]) == (0, 30)
    assert lost["diff_state_rebuilt"] == [
        "src: no diff state on disk (first run, or the state file was removed)"]

    path.write_bytes(b"not a database at all" * 100)
    damaged = run_ingest(settings)
    assert (damaged["chunks_embedded"], damaged["unchanged"]) == (0, 30)
    assert "could not be read" in damaged["diff_state_rebuilt"][0]

    (src / "note000.txt").unlink()
    calm = run_ingest(settings)  # trusted again: nothing rebuilt, the removal still seen
    assert calm["diff_state_rebuilt"] == [] and calm["deleted"] == 1 and calm["unchanged"] == 29
    _state_agrees(settings)


def test_the_quick_check_trusts_an_unchanged_stat_and_verify_reads_everything(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    _small_corpus(src, 5)
    settings = _settings(make_config, src)
    run_ingest(settings)
    target = src / "note002.txt"
    before = target.stat()
    with target.open("r+b") as f:  # same size, same inode, and the old mtime put back
        f.write(b"NOTE")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_ino) == (before.st_size, before.st_ino)

    trusted = run_ingest(settings)
    verified = run_ingest(settings, verify=True)
    (src / "note003.txt").write_text("Note 3 was rewritten, and its size changed with it.")
    changed = run_ingest(settings)

    assert (trusted["indexed"], trusted["unchanged"]) == (0, 5)  # the file was not read
    assert (verified["indexed"], verified["unchanged"]) == (1, 4)
    assert (changed["indexed"], changed["unchanged"]) == (1, 4)
    def indexed(run: dict[str, Any]) -> list[str]:  # per run: two runs can share a second
        return [r["doc_id"] for r in read_events(settings.events_dir, "documents_indexed")
                if r["run_id"] == run["run_id"] and r["outcome"] == "indexed"]

    assert (indexed(verified), indexed(changed)) == (["src/note002.txt"], ["src/note003.txt"])
    _state_agrees(settings)


# Runs the real ingest in a child process with small batches; after its third batch is flushed
# the child announces itself and sleeps, so the parent can SIGKILL it between batches.
CHILD = r"""
import os, sys, time
from pathlib import Path
from tessera.core.env import apply_offline_defaults
apply_offline_defaults()
from tessera.ingest import run as ingest
from tessera.ingest import source_pass as diff
from tessera.core.settings import load_settings
marker = Path(sys.argv[2])
real = diff._one_batch
done = []
def one_batch(sp, fb):
    real(sp, fb)
    done.append(1)
    if len(done) == 3:
        marker.write_text(str(os.getpid()))
        time.sleep(600)
diff._one_batch = one_batch
ingest.DOC_BATCH = 8
ingest.run_ingest(load_settings(sys.argv[1]))
"""


@pytest.mark.slow
def test_sigkill_mid_run_shows_as_killed_in_the_marts_and_the_rerun_repairs_the_state(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    from tessera.jobs.marts import build_marts

    src = tmp_path / "src"
    _small_corpus(src, 60)
    config = make_config(sources=[{"name": "src", "path": str(src)}])
    settings = load_settings(config)
    marker = tmp_path / "child.pid"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    kill_when_marked(CHILD, [str(config), str(marker)], marker, env, "finished its third batch")

    killed_run = {r["run_id"] for r in read_events(settings.events_dir, "documents_indexed")}
    assert len(killed_run) == 1
    build_marts(settings)
    import duckdb

    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        rows = con.execute("select run_id, status, documents_indexed, chunks_embedded, "
                           "finished_at, source_names from fct_ingest_runs").fetchall()
    finally:
        con.close()
    assert len(rows) == 1
    run_id, status, indexed, chunks, finished, sources = rows[0]
    assert (run_id, status, finished, sources) == (killed_run.pop(), "killed", None, "src")
    assert indexed == 24 and chunks == 24  # three batches of eight, one chunk each

    rerun = run_ingest(settings)
    assert rerun["diff_state_rebuilt"] and "did not finish" in rerun["diff_state_rebuilt"][0]
    assert (rerun["indexed"], rerun["unchanged"], rerun["chunks_embedded"]) == (36, 24, 36)
    assert _points(settings) == 60
    _state_agrees(settings)


def test_prune_keeps_the_diff_state_true(make_config: Callable[..., Path], tmp_path: Path) -> None:
    from tessera.jobs.prune import run_prune

    src = tmp_path / "src"
    _small_corpus(src, 6)
    settings = _settings(make_config, src)
    run_ingest(settings)
    pruned = run_prune(settings, now=int(time.time()) + 400 * 86400)  # past the 30-day TTL
    assert pruned["deleted"] == 6
    _state_agrees(settings)  # it forgot what prune deleted, and is still trusted

    again = run_ingest(settings)  # the documents are back, embedded again, nothing rebuilt
    assert (again["indexed"], again["unchanged"], again["diff_state_rebuilt"]) == (6, 0, [])
    _state_agrees(settings)


def test_a_file_name_that_is_not_utf8_is_quarantined(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    _small_corpus(src, 2)
    fd = os.open(os.fsencode(src) + b"/caf\xe9.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"A file whose name is Latin-1.")
    os.close(fd)
    settings = _settings(make_config, src)

    summary = run_ingest(settings)

    assert (summary["indexed"], summary["quarantined"]) == (2, 1)
    [row] = _quarantine(settings, summary["run_id"])
    assert row["expectation"] == "file_name_utf8" and "caf\\xe9.txt" in row["reason"]
    assert "rename the file" in row["reason"]
    assert run_ingest(settings)["quarantined"] == 1  # and again next run, nothing else lost


def test_skipped_files_still_get_their_expiry_refreshed(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    from tessera.jobs.prune import run_prune

    src = tmp_path / "src"
    _small_corpus(src, 4)
    settings = _settings(make_config, src)
    run_ingest(settings, ttl="1h")
    second = run_ingest(settings, ttl="7d")  # nothing read, nothing embedded
    assert (second["unchanged"], second["chunks_embedded"]) == (4, 0)
    store = open_store(settings)
    try:
        expiries = {p["expires_at"] for _, p in store.scan("test", Match(source="src"),
                                                           ["expires_at"])}
    finally:
        store.close()
    assert len(expiries) == 1 and expiries.pop() > time.time() + 6 * 86400
    assert run_prune(settings, now=int(time.time()) + 2 * 3600)["deleted"] == 0
    _state_agrees(settings)


def test_one_edited_record_of_a_read_file_reembeds_only_itself(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    """A changed file is read again, and its other records are looked up in the diff state: with
    sparse vectors on, they must still count as current (the state records the sparse config)."""
    src = tmp_path / "src"
    src.mkdir()
    records = [{"id": f"r{i}", "text": f"Record {i} says the ferry leaves at {i} o'clock."}
               for i in range(3)]
    (src / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = _settings(make_config, src)
    assert run_ingest(settings)["chunks_embedded"] == 3
    records[1]["text"] = "Record 1 now says the ferry is cancelled."
    (src / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    again = run_ingest(settings)

    assert (again["indexed"], again["unchanged"], again["chunks_embedded"]) == (1, 2, 1)
    assert again["sparse_written"] == 1
    _state_agrees(settings)


def test_a_re_run_after_a_small_change_embeds_in_one_batch_not_one_per_changed_file(
        make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unchanged files are skipped unread and do not fill a batch: the 10 changed files of 200
    go through one batch (one contract check, one model call), not ten batches of ~1 each."""
    from tessera.ingest import run as ingest

    monkeypatch.setattr(ingest, "DOC_BATCH", 16)
    src = tmp_path / "src"
    _small_corpus(src, 200)
    settings = _settings(make_config, src)
    first = run_ingest(settings)
    for i in range(0, 200, 20):
        (src / f"note{i:03d}.txt").write_text(f"Note {i}, edited: the tide turned late today.")
    second = run_ingest(settings)

    def embed_batches(run_id: str) -> int:
        return sum(1 for r in read_events(settings.events_dir, "ingest_batches")
                   if r["run_id"] == run_id and r["stage"] == "embed")

    assert (first["indexed"], embed_batches(first["run_id"])) == (200, 13)
    assert (second["indexed"], second["unchanged"], second["chunks_embedded"]) == (10, 190, 10)
    assert embed_batches(second["run_id"]) == 1
    _state_agrees(settings)


def _expiries(settings: Settings) -> set[int]:
    store = open_store(settings)
    try:
        return {p["expires_at"] for _, p in store.scan("test", Match(source="src"),
                                                       ["expires_at"])}
    finally:
        store.close()


@pytest.mark.parametrize("delete_missing", [True, False])
def test_a_re_run_rewrites_only_the_expiries_that_move(
        make_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        delete_missing: bool) -> None:
    """An expiry is rounded up to 1% of the TTL: re-runs inside that step (quick check or
    --verify) write no payload at all; a shorter TTL lowers every expiry, a longer one raises it.
    Both refresh paths: by filter at the end (delete_missing) and by id per page of files."""
    from tessera.ingest.points import expiry
    from tessera.store.edge import EdgeStore

    touched: list[int] = []  # points each payload update of the run reaches (the real store)
    set_ids, set_where = EdgeStore.set_payload, EdgeStore.set_payload_where

    inside: list[bool] = []  # within a filtered update (which may page through by_ids itself)

    def by_ids(self: EdgeStore, name: str, ids: list[str], payload: dict[str, Any]) -> None:
        if not inside:
            touched.append(len(ids))
        set_ids(self, name, ids, payload)

    def by_filter(self: EdgeStore, name: str, match: Match, payload: dict[str, Any]) -> None:
        touched.append(self.count(name, match))
        inside.append(True)
        try:
            set_where(self, name, match, payload)
        finally:
            inside.pop()

    monkeypatch.setattr(EdgeStore, "set_payload", by_ids)
    monkeypatch.setattr(EdgeStore, "set_payload_where", by_filter)
    day = 86400  # the step of a 100-day TTL
    start = 1_750_000_000 // day * day + day // 2  # the runs' clock, mid-step: one step for all

    def clock() -> float:
        return float(start)

    src = tmp_path / "src"
    _small_corpus(src, 6)
    settings = load_settings(make_config(sources=[
        {"name": "src", "path": str(src), "delete_missing": delete_missing}]))
    assert run_ingest(settings, ttl="100d", clock=clock)["indexed"] == 6
    (first,) = _expiries(settings)
    assert first % day == 0 and start + 100 * day <= first < start + 101 * day
    points = _points(settings)

    touched.clear()
    for verify in (False, True):  # skipped unread, then read and found unchanged
        out = run_ingest(settings, ttl="100d", verify=verify, clock=clock)
        assert (out["unchanged"], out["chunks_embedded"]) == (6, 0)
    assert sum(touched) == 0 and _expiries(settings) == {first}

    run_ingest(settings, ttl="1h", clock=clock)  # a shorter TTL applies to what is seen again
    assert sum(touched) == points
    (lowered,) = _expiries(settings)
    assert expiry(start, 3600) <= lowered <= expiry(int(clock()), 3600)
    touched.clear()
    run_ingest(settings, ttl="100d", verify=True, clock=clock)
    assert sum(touched) == points and _expiries(settings) == {first}
    _state_agrees(settings)


def test_a_re_run_that_reads_no_file_does_not_import_great_expectations(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    """The contracts' import (~4 CPU s) starts when a file must be read, not on a re-run that
    skips every file; an edited file brings it back (and its record is checked)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    _small_corpus(src, 3)
    config = make_config(sources=[{"name": "src", "path": str(src)}])
    run_ingest(load_settings(config))
    code = ("import json, sys\nfrom flows.config import load\n"
            "from tessera.ingest.run import run_ingest\n"
            "r = run_ingest(load(sys.argv[1]))\n"
            "print(json.dumps([r['indexed'], r['unchanged'], 'great_expectations' in sys.modules]))")

    def fresh_run() -> list[Any]:
        out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True,
                             text=True, timeout=300, check=True)
        return list(json.loads(out.stdout.strip().splitlines()[-1]))

    assert fresh_run() == [0, 3, False]
    (src / "note001.txt").write_text("Note 1 was edited: the tide now turns at noon.")
    assert fresh_run() == [1, 2, True]
