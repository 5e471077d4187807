"""The ingest's steps as parts: a batch returns its result (the source pass aggregates it), one
helper writes every expiry refresh, and "unchanged" is decided in one module. Fast: the real
store, diff state and run context, no model load and no contract suite run."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from models import get_spec
from tessera.core.settings import Settings, load_settings
from tessera.core.steps import PlainSteps
from tessera.core.types import Chunk, Document, Match, Quarantined
from tessera.ingest.chunking import signature
from tessera.ingest.context import Batch, BatchResult, IngestRun, Target
from tessera.ingest.identity import place
from tessera.ingest.points import Existing, build_points
from tessera.ingest.state import DiffState, FileStat, state_path
from tessera.ingest.unchanged import document_unchanged, unchanged_files
from tessera.store import VectorStore, open_store
from tests.support.paths import REPO

INGEST = REPO / "tessera" / "ingest"


@pytest.fixture
def settings(make_config: Callable[..., Path], tmp_path: Path) -> Settings:
    return load_settings(make_config(sources=[{"name": "src", "path": str(tmp_path / "src"),
                                                "on_invalid": "keep_last_good"}]))


@pytest.fixture
def store(settings: Settings) -> Iterator[VectorStore]:
    s = open_store(settings)
    yield s
    s.close()


def _target(settings: Settings, store: VectorStore, now: int, expires_at: int) -> Target:
    spec = get_spec(settings, None)
    placed = place(store, settings, settings.collection, spec)
    cfg = placed.chunking
    return Target(source=settings.sources[0], items=None, collection=placed.collection,
                  spec=placed.spec, chunking=signature(placed.spec.max_length, cfg.max_tokens,
                                                       cfg.overlap),
                  now=now, expires_at=expires_at, chunk_config=cfg, sparse=placed.info.sparse)


def _index_one(store: VectorStore, target: Target, doc: Document, expires_at: int) -> str:
    """Write one document as an earlier run did (one chunk, a unit vector); its point id."""
    vec = np.zeros((1, target.spec.dimension), np.float32)
    vec[0, 0] = 1.0
    chunk = Chunk(doc.doc_id, 0, 1, doc.text, 3)
    [point] = build_points(target.collection, doc, [chunk], vec, target.spec.id, target.now,
                           expires_at, target.chunking, None, target.sparse_signature)
    store.upsert(target.collection, [point])
    return point.id


def test_a_batch_returns_its_result_and_leaves_the_run_counts_to_the_source_pass(
        settings: Settings, store: VectorStore) -> None:
    """A record quarantined now whose last good version stays (keep_last_good): the batch says
    so in what it returns, moves that version's expiry, and adds nothing to the run's counts."""
    from tessera.ingest.batch import process_batch

    target = _target(settings, store, now=1_000, expires_at=9_000)
    doc = Document(doc_id="src/a.txt", source="src", uri="file:///a.txt", modality="text",
                   text="the tide turned late")
    pid = _index_one(store, target, doc, expires_at=5_000)
    state = DiffState(state_path(settings.home, target.collection, "src"), target.collection,
                      "src")
    try:
        state.rebuild(store, "")
        existing = state.lookup([doc.doc_id])
    finally:
        state.close()
    run = IngestRun(settings, PlainSteps(), None, "ingest", None)
    bad = Quarantined(source="src", doc_id=doc.doc_id, uri=doc.uri, reason="unreadable",
                      content_hash="h2")

    result = process_batch(run, store, Batch(target, existing, 1.0, records=1), [bad])

    assert isinstance(result, BatchResult)
    assert [(o.doc_id, o.outcome, o.content_hash) for o in result.outcomes] == [
        (doc.doc_id, "quarantined", "h2")]
    assert (result.seen, result.quarantined, result.indexed, result.unchanged) == (1, 1, 0, 0)
    assert (run.counts.seen, run.counts.quarantined) == (0, 0)
    assert run.events.rows("documents_indexed") == []  # the source pass records outcomes
    [(_, payload)] = list(store.scan(target.collection, Match(source="src"), ["expires_at"]))
    assert payload["expires_at"] == 9_000
    assert pid in existing[doc.doc_id].ids
    assert not hasattr(run, "outcome") and not hasattr(run, "take_outcomes")


def _payload_writers() -> dict[str, list[str]]:
    """Functions of tessera/ingest that call the store's set_payload / set_payload_where."""
    found: dict[str, list[str]] = {}
    for path in sorted(INGEST.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            if any(isinstance(n, ast.Attribute) and n.attr in ("set_payload", "set_payload_where")
                   for n in ast.walk(fn)):
                found.setdefault(path.name, []).append(fn.name)
    return found


def test_every_expiry_refresh_goes_through_one_helper() -> None:
    assert _payload_writers() == {"unchanged.py": ["refresh_expiry"]}


def test_the_stat_test_trusts_only_a_recorded_stat_model_and_build(tmp_path: Path) -> None:
    state = DiffState(tmp_path / "s.sqlite", "c", "src")
    try:
        st = FileStat(10, 123, 7)
        state.record_files({"a": st, "b": st, "c": st}, "m1", "k1")
        now = {"a": st, "b": FileStat(11, 123, 7), "c": st, "d": st}
        assert unchanged_files(state, now, "m1", "k1") == {"a", "c"}
        assert unchanged_files(state, now, "m2", "k1") == set()  # a new model reads them all
        assert unchanged_files(state, now, "m1", "k2") == set()  # so does a new build key
        assert unchanged_files(state, now, "m1", "k1", verify=True) == set()
    finally:
        state.close()


def test_the_hash_test_wants_every_chunk_from_this_content_model_and_build() -> None:
    ok = Existing(hashes={"h"}, models={"m"}, chunkings={"c"}, sparses={"none"},
                  chunk_counts={2}, ids_by_index={0: "p0", 1: "p1"})
    args = ("m", "c", "none")
    assert document_unchanged(ok, "h", *args)
    assert not document_unchanged(None, "h", *args)
    assert not document_unchanged(ok, "h2", *args)
    assert not document_unchanged(ok, "h", "m2", "c", "none")
    assert not document_unchanged(ok, "h", "m", "c", "bm25")
    missing = Existing(hashes={"h"}, models={"m"}, chunkings={"c"}, sparses={"none"},
                       chunk_counts={2}, ids_by_index={0: "p0"})
    assert not document_unchanged(missing, "h", *args)


def test_feed_and_batch_ask_the_unchanged_module() -> None:
    """Neither keeps a decision of its own: feed.py calls unchanged_files, batch.py
    document_unchanged, and the state and the index record only hold what they compare."""
    calls = {p.name: {n.func.id for n in ast.walk(ast.parse(p.read_text()))
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
             for p in INGEST.glob("*.py")}
    assert "unchanged_files" in calls["feed.py"]
    assert "document_unchanged" in calls["batch.py"]
    assert not hasattr(Existing, "is_current") and not hasattr(DiffState, "files_unchanged")
