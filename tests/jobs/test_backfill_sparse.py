"""`tessera backfill-sparse`: an index built without sparse vectors gets them from payload text,
without the embedding model; a SIGKILL half-way then a re-run leaves every point with one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.ingest import ingest_flow
from tessera.core.events import read_events
from tessera.core.settings import load_settings
from tessera.core.sparse import SparseConfig, sparse_identity, sparse_signature
from tests.support.machine import kill_when_marked
from tests.support.paths import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")

# Runs the real backfill in a child; after its second batch is marked it announces itself and
# sleeps, so the parent can SIGKILL it half-way.
CHILD = r"""
import os, sys, time
from pathlib import Path
from tessera.store.edge import EdgeStore
marker = Path(sys.argv[2])
real = EdgeStore.set_payload
calls = []
def set_payload(self, name, ids, payload):
    real(self, name, ids, payload)
    calls.append(len(ids))
    if len(calls) == 2:
        marker.write_text(str(os.getpid()))
        time.sleep(600)
EdgeStore.set_payload = set_payload
from tessera.cli.main import main
main(["backfill-sparse", "--config", sys.argv[1], "--batch-size", "8", "--json"])
"""
# The same backfill through the CLI, then proof that no embedding model was ever imported.
NO_MODEL = r"""
import sys
from tessera.cli.main import main
code = main(["backfill-sparse", "--config", sys.argv[1], "--batch-size", "8", "--json"])
loaded = sorted(m for m in ("models.local", "models.optimized", "openvino", "sentence_transformers",
                            "torch", "transformers") if m in sys.modules)
print("LOADED=" + ",".join(loaded))
sys.exit(code)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


def _sparse_state(config: Path) -> tuple[int, int, set[str], dict | None]:
    """(points, points holding a bm25 vector, payload signatures, recorded sparse config)."""
    import qdrant_edge as qe

    from tessera.store.edge import EdgeStore

    settings = load_settings(config)
    store = EdgeStore(settings.home / "qdrant")
    try:
        shard = store._shard("test")
        total = shard.count(qe.CountRequest(exact=True))
        with_sparse = shard.count(qe.CountRequest(exact=True, filter=qe.Filter(
            must=[qe.HasVectorCondition("bm25")])))
        from tessera.core.types import Match

        sigs = {str(p.get("sparse")) for _, p in store.scan("test", Match(), ["sparse"])}
        info = store.get_collection("test")
        assert info is not None
        return total, with_sparse, sigs, info.sparse
    finally:
        store.close()


@pytest.mark.slow
def test_backfill_sigkill_then_rerun_gives_every_point_one_sparse_vector(
        make_config: Callable[..., Path], tmp_path: Path) -> None:
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc{i:02d}.txt").write_text(
            " ".join(f"Document {i} sentence {j} about topic{i % 7}." for j in range(3 + i % 30)))
    legacy = make_config(sources=[{"name": "many", "path": str(corpus)}], name="legacy.toml",
                         sparse={"enabled": False})
    first = ingest_flow(config=str(legacy))
    assert first["sparse_written"] == 0 and first["points_upserted"] >= 40
    config = make_config(sources=[{"name": "many", "path": str(corpus)}])
    total, with_sparse, sigs, recorded = _sparse_state(config)
    assert (with_sparse, sigs, recorded) == (0, {"None"}, None)

    marker = tmp_path / "child.pid"
    kill_when_marked(CHILD, [str(config), str(marker)], marker, _env(), "finished its second batch")
    _, half, _, recorded = _sparse_state(config)
    assert 0 < half < total and recorded is None  # half-way: searches stay dense-only

    rerun = subprocess.run([sys.executable, "-c", NO_MODEL, str(config)], env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = json.loads(rerun.stdout.splitlines()[0])
    assert rerun.stdout.strip().splitlines()[-1] == "LOADED="  # the model was never loaded
    assert out["points"] == total and out["already_done"] >= 16  # two batches of 8 survived
    assert out["already_done"] + out["updated"] == total

    identity = sparse_identity(SparseConfig())
    assert _sparse_state(config) == (total, total, {sparse_signature(identity)}, identity)
    again = subprocess.run([sys.executable, "-m", "tessera.cli.main", "backfill-sparse", "--config",
                            str(config), "--json"], env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert json.loads(again.stdout)["updated"] == 0  # idempotent
    runs = read_events(load_settings(config).events_dir, "sparse_backfill_runs")
    assert sorted(r["status"] for r in runs) == ["completed", "completed"]  # the killed one left none

    # The collection is hybrid now: ingest writes nothing new, hybrid search runs.
    assert ingest_flow(config=str(config))["chunks_embedded"] == 0
    from tessera.service.search import SearchQuery, run_search

    res = run_search(load_settings(config), SearchQuery(text="topic3", k=3))
    assert res["mode"] == "hybrid" and res["warning"] is None and res["results"]


def test_backfill_refuses_bad_requests_before_work(make_config: Callable[..., Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tessera.cli.main import main

    off = make_config(sparse={"enabled": False})
    assert main(["backfill-sparse", "--config", str(off), "--json"]) == 2
    assert "sparse.enabled" in json.loads(capsys.readouterr().out)["message"]
    on = make_config(name="on.toml")
    assert main(["backfill-sparse", "--config", str(on), "--collection", "nope", "--json"]) == 2
    assert "'nope' does not exist" in json.loads(capsys.readouterr().out)["message"]
