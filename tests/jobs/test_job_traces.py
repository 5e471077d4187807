"""Jobs besides ingest are traces of their own too: `tessera prune` is the command's span with
the job's under it, and the prune_runs rows carry that trace's id."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.core.events import read_events
from tessera.core.settings import load_settings
from tests.support.config import write_config
from tests.support.paths import EXAMPLES
from tests.support.traces import children, exporter, named, trace_of


def test_prune_is_a_trace_and_its_events_carry_it(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tessera.cli.main import main
    from tessera.ingest.run import run_ingest

    exporter()
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES), "ttl": "1h"}])
    run_ingest(load_settings(config))
    assert main(["prune", "--dry-run", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = read_events(load_settings(config).events_dir, "prune_runs", summary["run_id"])
    assert rows and len({r["trace_id"] for r in rows}) == 1
    spans = trace_of(rows[0]["trace_id"])
    [command] = named(spans, "tessera prune")
    assert [s.name for s in children(spans, command)] == ["prune run"]
