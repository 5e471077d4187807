"""A writer killed mid-upsert, and two writers at once: the store stays exactly right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.ingest import ingest_flow
from tessera.core.settings import load_settings
from tessera.core.types import Match
from tessera.store import open_store
from tests.support.machine import crash_on_third_upsert
from tests.support.paths import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")

# Runs the real ingest in a child process. The real upsert runs; after writing half of its
# third batch the child announces itself and sleeps, so the parent can SIGKILL it mid-upsert.
CHILD = crash_on_third_upsert() + """
from flows.ingest import ingest_flow
ingest_flow(config=sys.argv[1])
"""


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())  # the session's test server
    env["PYTHONPATH"] = str(REPO)
    return env


def _listed_runs(config: Path) -> dict[str, str]:
    """run id -> status, of the runs `tessera status` lists."""
    from tessera.service.status import status

    return {r["run_id"]: r["status"] for r in status(load_settings(config), last=5)["last_runs"]}


@pytest.mark.slow
def test_sigkill_mid_upsert_then_rerun_leaves_one_point_per_chunk(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(40):
        body = " ".join(f"Document {i} sentence {j} on topic {i % 7}." for j in range(3 + i % 40))
        (corpus / f"doc{i:02d}.txt").write_text(body)
    config = make_config(sources=[{"name": "many", "path": str(corpus)}], store={"upsert_batch": 8})
    marker = tmp_path / "child.pid"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(config), str(marker)], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "child never reached its third upsert"
            time.sleep(0.2)

        # A second writer while the first holds the store: a clear refusal, no corruption.
        busy = make_config(sources=[{"name": "many", "path": str(corpus)}], name="busy.toml",
                           store={"lock_timeout": 1})
        second = subprocess.run([sys.executable, "-m", "tessera.cli.main", "ingest", "--config", str(busy),
                                 "--json"], env=_env(), capture_output=True, text=True, timeout=180)
        assert second.returncode == 2, second.stderr[-2000:]
        out = json.loads(second.stdout)
        assert out["error"] == "StoreLockedError"
        assert f"pid {child.pid}" in out["message"] and "in use by another Tessera process" in out["message"]
        # No summary yet and its process lives: running. (Only the events are read: `tessera
        # status` would wait for the store the child holds.)
        from tessera.core.events import read_events
        from tessera.service.status import unfinished_runs

        events = load_settings(config).events_dir
        finished = {r["run_id"] for r in read_events(events, "ingest_runs")}  # the refused one
        assert [r["status"] for r in unfinished_runs(events, finished)] == ["running"]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stderr is not None
        child.stderr.close()
    # The killed run is listed as killed; the refused second writer wrote its summary: failed.
    assert sorted(_listed_runs(config).values()) == ["failed", "killed"]

    summary = ingest_flow(config=str(config))
    assert summary["seen"] == 40 and summary["quarantined"] == 0
    assert 0 < summary["indexed"] < 40  # what the killed run finished is not embedded again
    settings = load_settings(config)
    store = open_store(settings)
    try:
        points = [p for _, p in store.scan("test", Match(), ["doc_id", "chunk_index", "chunk_count"])]
    finally:
        store.close()
    keys = Counter((p["doc_id"], p["chunk_index"]) for p in points)
    assert max(keys.values()) == 1
    per_doc: dict[str, set[int]] = {}
    for p in points:
        per_doc.setdefault(p["doc_id"], set()).add(p["chunk_index"])
    assert len(per_doc) == 40
    for p in points:
        assert per_doc[p["doc_id"]] == set(range(p["chunk_count"]))
