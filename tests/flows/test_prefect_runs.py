"""CLI runs against a running Prefect server show up in its API named after what they did and
tagged with Tessera's run_id.

The server is the session's test server (conftest: `prefect_test_harness` runs a real Prefect
server in a subprocess on 127.0.0.1); `tessera` runs as its own process, pointed at it by
PREFECT_API_URL, exactly as a user's shell would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flows.runs import RUN_ID_TAG, describe_ingest, describe_nightly
from tessera.core.env import OFFLINE_DEFAULTS
from tests.support.config import write_config
from tests.support.paths import EXAMPLES, REPO
from tests.support.prefect import TESSERA, api_url

pytestmark = pytest.mark.usefixtures("prefect_server")

def _cli(url: str, tmp: Path, *argv: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TESSERA_"))}
    env.update({**OFFLINE_DEFAULTS, "PREFECT_API_URL": url,
                "PREFECT_HOME": str(tmp / "prefect-home")})
    done = subprocess.run([str(TESSERA), *argv, "--json"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # -v shows our info lines and Prefect's task states, not a line per API request (-vv does).
    assert "HTTP Request:" not in done.stderr, done.stderr[-3000:]
    if "-v" in argv:
        assert "INFO" in done.stderr and "Finished in state" in done.stderr, done.stderr[-3000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _flow_runs(url: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return list(client.read_flow_runs(limit=200))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_runs_appear_on_the_server_with_readable_names_and_run_id_tags(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("tides.txt", "photosynthesis.md"):
        (corpus / name).write_bytes((EXAMPLES / name).read_bytes())
    config = write_config(tmp_path / "tessera.toml",
                          {"home": str(tmp_path / "home"), "collection": "runs"}, {},
                          [{"name": "examples", "path": str(corpus)}])
    url = api_url()
    ingest = _cli(url, tmp_path, "ingest", "--source", "examples", "--config", str(config))
    prune = _cli(url, tmp_path, "prune", "--dry-run", "--config", str(config), "-v")
    runs = _flow_runs(url)

    def by_tag(run_id: str) -> Any:
        found = [r for r in runs if f"{RUN_ID_TAG}{run_id}" in (r.tags or [])]
        assert len(found) == 1, [(r.name, r.tags) for r in runs[:20]]
        return found[0]

    run = by_tag(ingest["run_id"])
    assert re.fullmatch(r"ingest-examples-\d{8}T\d{4}", run.name), run.name
    # The flow run names its trace, the one every event of the run carries.
    from tessera.core.events import read_events
    from tessera.core.settings import load_settings

    [row] = read_events(load_settings(config).events_dir, "ingest_runs", ingest["run_id"])
    assert row["trace_id"] and f"trace_id:{row['trace_id']}" in (run.tags or [])
    assert run.state is not None and run.state.is_completed()
    assert ingest["indexed"] == 2
    pruned = by_tag(prune["run_id"])
    assert re.fullmatch(r"prune-dry-run-\d{8}T\d{4}", pruned.name), pruned.name


def test_run_summaries_are_sentences() -> None:
    line = describe_ingest({"run_id": "r1", "seen": 10, "indexed": 3, "unchanged": 6,
                            "quarantined": 1, "deleted": 0, "chunks_embedded": 4, "seconds": 1.26})
    assert line == ("Ingest run r1 saw 10 documents: 3 indexed, 6 unchanged, 1 quarantined, "
                    "0 deleted (4 chunks embedded) in 1.3 s.")
    nightly = describe_nightly({"prune": {"deleted": 5}, "models": {"models": [{}]},
                                "quality": [{"dataset": "sample", "ndcg@10": 0.8123}],
                                "marts": {"ok": True}, "seconds": 12.0})
    assert nightly == ("Nightly run pruned 5 expired points, verified 1 model, scored sample at "
                       "nDCG@10 0.812, rebuilt the marts in 12.0 s.")
    assert "{" not in nightly


def test_every_span_of_a_flow_run_carries_its_flow_run_id(tmp_path: Path) -> None:
    """An ingest flow run in this process: its trace's spans, down to each step, carry the
    Prefect flow-run id, and the flow run is tagged with the trace id."""
    from flows.ingest import ingest_flow
    from tessera.core.events import read_events
    from tessera.core.settings import load_settings
    from tests.support.traces import exporter, trace_of

    exporter()
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES)}])
    summary = ingest_flow(config=str(config))
    [row] = read_events(load_settings(config).events_dir, "ingest_runs", summary["run_id"])
    # Prefect's engine makes its own span for the flow run (the root); ours are below it.
    spans = [s for s in trace_of(row["trace_id"]) if s.instrumentation_scope.name == "tessera"]
    ids = {s.attributes.get("prefect.flow_run.id") for s in spans}
    assert len(spans) > 5 and len(ids) == 1 and None not in ids
    [run] = [r for r in _flow_runs(api_url()) if str(r.id) in ids]
    assert f"trace_id:{row['trace_id']}" in (run.tags or [])
    assert {"flow ingest", "ingest run", "embed", "upsert"} <= {s.name for s in spans}
