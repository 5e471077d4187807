"""An ingest run is one trace (OpenTelemetry SDK, in-memory exporter): the run, each source, each
batch and each step as spans with their counts, the run's counts on its root; the run's events
carry the trace id, so an ingest_runs row leads to its trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.core.events import read_events
from tessera.core.settings import load_settings
from tests.support.config import write_config
from tests.support.paths import EXAMPLES
from tests.support.traces import children, exporter, named, trace_of


def test_an_ingest_run_is_one_trace_with_a_span_per_step(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    import json

    from tessera.cli.main import main

    exporter()
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "examples", "path": str(EXAMPLES)}])
    assert main(["ingest", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    settings = load_settings(config)
    [run_row] = read_events(settings.events_dir, "ingest_runs", summary["run_id"])
    spans = trace_of(run_row["trace_id"])
    [command] = [s for s in spans if s.parent is None]
    assert command.name == "tessera ingest"
    [run] = children(spans, command)
    assert run.name == "ingest run" and run.attributes["tessera.run_id"] == summary["run_id"]
    for count in ("seen", "indexed", "unchanged", "quarantined", "deleted", "chunks_embedded",
                  "points_upserted", "sparse_written"):
        assert run.attributes[f"tessera.{count}"] == summary[count], count
    # Every source is listed first (the progress bar's total), then read source by source.
    assert [s.name for s in children(spans, run)] == ["discover", "source"]
    [source] = named(spans, "source")
    assert source.attributes["tessera.source"] == "examples"
    batches = named(spans, "batch")
    assert batches and all(b.parent.span_id == source.context.span_id for b in batches)
    steps = {s.name for b in batches for s in children(spans, b)}
    assert {"chunk", "embed", "sparse", "upsert"} <= steps
    embedded = sum(s.attributes["tessera.items"] for s in named(spans, "embed"))
    assert embedded == summary["chunks_embedded"]
    assert {"load", "batch", "refresh-expiry"} <= {s.name for s in children(spans, source)}
    # Every event of the run is in its trace.
    docs = read_events(settings.events_dir, "documents_indexed", summary["run_id"])
    assert docs and {d["trace_id"] for d in docs} == {run_row["trace_id"]}
    span_ids = {f"{s.context.span_id:016x}" for s in spans}
    assert {d["span_id"] for d in docs} <= span_ids
    assert run_row["span_id"] == f"{run.context.span_id:016x}"


def test_a_failed_run_marks_its_root_span_with_the_failure(tmp_path: Path) -> None:
    from tessera.core.errors import PipelineError
    from tessera.ingest.run import run_ingest

    exporter()
    folder = tmp_path / "gone"
    folder.mkdir()
    (folder / "a.txt").write_text("a note")
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {},
                          [{"name": "notes", "path": str(folder)}])
    settings = load_settings(config)
    folder.rename(tmp_path / "moved")  # the source's folder vanishes after the config loads
    with pytest.raises(PipelineError):
        run_ingest(settings)
    [row] = read_events(settings.events_dir, "ingest_runs")
    [run] = named(trace_of(row["trace_id"]), "ingest run")
    assert row["status"] == "failed_input"
    assert run.status.status_code.name == "ERROR"
    assert run.attributes["tessera.error.kind"] in {"failed_input", "SourceError", "ConfigError"}
