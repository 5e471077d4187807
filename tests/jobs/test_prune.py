"""TTL pruning: range-filter deletes on both stores, never a future expiry, events, idempotence."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from flows.prune import prune_flow
from models.registry import BUILTIN
from tessera.cli.output import print_human
from tessera.core.events import read_events
from tessera.core.settings import Settings, load_settings
from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
from tessera.ingest.points import NEVER_EXPIRES
from tessera.jobs.prune import run_prune
from tessera.service.status import status
from tessera.store import ensure_collection, open_store

# qdrant-client's local mode (the server store's test double) warns that it ignores indexes.
pytestmark = [pytest.mark.usefixtures("prefect_server"),
              pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")]

SPEC = BUILTIN["all-minilm-l6-v2"]
NOW = 1_900_000_000




def _seed(settings: Settings, collection: str, expiries: dict[str, int]) -> None:
    """One point per doc id, with the given expires_at, written straight to the store."""
    rng = np.random.default_rng(0)
    store = open_store(settings)
    try:
        ensure_collection(store, CollectionInfo.for_model(collection, SPEC))
        store.upsert(collection, [
            PointRecord(id=point_id(collection, doc, 0), vector=rng.normal(size=SPEC.dimension),
                        payload={"doc_id": doc, "source": "s", "modality": "text",
                                 "expires_at": exp, "chunk_index": 0, "chunk_count": 1})
            for doc, exp in expiries.items()])
    finally:
        store.close()


def _doc_ids(settings: Settings, collection: str) -> set[str]:
    store = open_store(settings)
    try:
        return {p["doc_id"] for _, p in store.scan(collection, Match(), ["doc_id"])}
    finally:
        store.close()


@pytest.fixture(params=["edge", "qdrant"])
def store_settings(request: pytest.FixtureRequest, make_config: Callable[..., Path],
                   tmp_path: Path) -> Settings:
    """Settings for each store implementation (qdrant-client in local mode for the server one)."""
    store = {"kind": "edge"} if request.param == "edge" else {"kind": "qdrant",
                                                              "path": str(tmp_path / "qdrant")}
    return load_settings(make_config(store=store))


def test_prune_deletes_exactly_the_expired_points(store_settings: Settings) -> None:
    """expires_at <= now goes; now + 1 and the never-expires sentinel stay; on both stores."""
    _seed(store_settings, "a", {"past": NOW - 3600, "edge-of-now": NOW, "next-second": NOW + 1,
                                "never": NEVER_EXPIRES})
    _seed(store_settings, "b", {"old": NOW - 10, "new": NOW + 10})

    dry = run_prune(store_settings, dry_run=True, now=NOW)
    assert (dry["expired"], dry["deleted"], dry["dry_run"]) == (3, 0, True)
    assert _doc_ids(store_settings, "a") == {"past", "edge-of-now", "next-second", "never"}

    done = run_prune(store_settings, now=NOW)
    assert (done["expired"], done["deleted"]) == (3, 3)
    assert done["collections"] == {"a": {"expired": 2, "deleted": 2},
                                   "b": {"expired": 1, "deleted": 1}}
    assert _doc_ids(store_settings, "a") == {"next-second", "never"}
    assert _doc_ids(store_settings, "b") == {"new"}

    again = run_prune(store_settings, now=NOW)  # idempotent
    assert (again["expired"], again["deleted"]) == (0, 0)

    rows = read_events(store_settings.events_dir, "prune_runs")
    assert len(rows) == 6 and len({r["run_id"] for r in rows}) == 3
    by_run = {(r["run_id"], r["collection"]): r for r in rows}
    assert by_run[(done["run_id"], "a")]["deleted"] == 2
    assert by_run[(dry["run_id"], "a")]["dry_run"] is True
    assert all(r["started_at"] is not None and r["seconds"] >= 0 for r in rows)


def test_prune_flow_and_cli_report_json(make_config: Callable[..., Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`tessera prune --dry-run --json` prints the summary; the flow runs under Prefect."""
    from tessera.cli.main import main

    config = make_config()
    _seed(load_settings(config), "test", {"gone": 1_000, "kept": NEVER_EXPIRES})
    assert main(["prune", "--dry-run", "--json", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"run_id", "expired", "deleted", "dry_run", "seconds"} <= set(out)
    assert (out["expired"], out["deleted"], out["dry_run"]) == (1, 0, True)

    summary = prune_flow(config=str(config))
    assert (summary["expired"], summary["deleted"]) == (1, 1)
    assert _doc_ids(load_settings(config), "test") == {"kept"}


def test_source_ttl_and_ingest_override(make_config: Callable[..., Path], corpus: Path) -> None:
    """A source's TTL sets expires_at; --ttl overrides it for one run; prune honours both. The
    clock is injected (`now=`): nothing sleeps, and the TTL is a legal one (at least a minute)."""
    from flows.ingest import ingest_flow

    config = make_config(sources=[
        {"name": "short", "path": str(corpus), "ttl": "1h"},
        {"name": "forever", "path": str(corpus), "ttl": "none"},
    ])
    settings = load_settings(config)
    ingest_flow(config=str(config))
    store = open_store(settings)
    try:
        short = store.count("test", Match(source="short"))
        forever = store.count("test", Match(source="forever"))
    finally:
        store.close()
    assert short > 0 and forever == short

    assert prune_flow(config=str(config), now=int(time.time()))["deleted"] == 0  # not yet
    later = int(time.time()) + 3600 + 60  # the 1 h TTL has passed
    pruned = prune_flow(config=str(config), now=later)
    assert pruned["deleted"] == short
    store = open_store(settings)
    try:
        assert store.count("test", Match(source="short")) == 0
        assert store.count("test", Match(source="forever")) == forever
    finally:
        store.close()

    # --ttl for one run: the same source's points now never expire.
    ingest_flow(config=str(config), sources=["short"], ttl="none")
    assert prune_flow(config=str(config), now=later + 3600)["deleted"] == 0
    snapshots = read_events(settings.events_dir, "index_snapshots")
    assert any(r["run_id"] == pruned["run_id"] and r["source"] == "short" and r["points"] == 0
               for r in snapshots)


def test_collections_no_valid_name_reaches_are_reported(make_config: Callable[..., Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A collection stored under a name with '/' (`collection = "team/docs"` made
    qdrant/team/docs before names were checked) or outside the name pattern is named by
    `status` and `prune`, not silently skipped."""
    settings = load_settings(make_config())
    for name in ("kept", "nested", "odd"):
        _seed(settings, name, {f"{name}-doc": NOW - 10})
    root = settings.home / "qdrant"
    (root / "team").mkdir()
    os.replace(root / "nested", root / "team" / "docs")
    os.replace(root / "odd", root / "odd name")

    shown = status(settings)
    assert [c["name"] for c in shown["collections"]] == ["kept"]
    assert shown["unlisted"] == ["odd name", "team/docs"]
    pruned = run_prune(settings, now=NOW)
    assert pruned["collections"] == {"kept": {"expired": 1, "deleted": 1}}
    assert pruned["unlisted"] == ["odd name", "team/docs"]
    for command, result in (("status", shown), ("prune", pruned)):
        print_human(command, result)
        assert "team/docs" in capsys.readouterr().out
