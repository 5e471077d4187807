"""What a person reads without --json: an ad-hoc ingest that refused a file points to `tessera
quarantine`, the quarantine is a table, search hits show rank, title and readable scores (the
dense similarity and BM25, not the fused sum), each name once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tessera.cli.main import main
from tests.support.config import write_config


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config with no declared source, and a folder of notes, one of them unreadable."""
    root = tmp_path_factory.mktemp("output")
    folder = root / "field-notes"
    folder.mkdir()
    (folder / "tides.txt").write_text(
        "Why the sea rises twice a day\nThe Moon pulls the oceans; tides follow it.\n")
    (folder / "bread.txt").write_text("Sourdough starter care\nFeed it flour and water daily.\n")
    (folder / "broken.txt").write_bytes(b"\xff\xfe\x00bad" * 10)
    config = write_config(root / "tessera.toml", {"home": str(root / "home")}, {}, [])
    return config, folder


def test_an_ingest_that_refused_files_points_to_the_quarantine(
        notes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, folder = notes
    assert main(["ingest", str(folder), "--config", str(config), "-q"]) == 0
    capsys.readouterr()
    assert main(["ingest", str(folder), "--config", str(config), "--verify"]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"Ingest run (\S+) saw", out)
    assert run_id and "1 quarantined" in out, out
    assert f"tessera quarantine --run {run_id.group(1)}" in out

    assert main(["quarantine", "--run", run_id.group(1), "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "1 quarantined record(s)" in table and "reason" in table.splitlines()[2]
    row = next(line for line in table.splitlines() if "broken.txt" in line)
    assert run_id.group(1) in row
    assert main(["quarantine", "--run", run_id.group(1), "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 1  # machine output unchanged


def test_search_hits_show_rank_title_and_readable_scores_once_each(
        notes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, folder = notes
    main(["ingest", str(folder), "--config", str(config), "-q"])
    capsys.readouterr()
    assert main(["search", "why does the sea rise", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    first, where = out[0], out[1]
    # The title is the file's first line; scores are the sides', not the fused one (DBSF's
    # normalised sum, or RRF's ~0.03), which ranks but means nothing on its own.
    assert re.fullmatch(r" 1\. Why the sea rises twice a day  \(dense 0\.\d{3} · bm25 \d+\.\d\d\)",
                        first), first
    adhoc = where.split(":")[0].strip()
    assert adhoc.startswith("adhoc-field-notes-") and where.strip().startswith(adhoc + ":tides.txt")
    assert sum(line.count(adhoc) for line in out[:2]) == 1  # the hashed name once per hit
    assert out[2].startswith(" 2. Sourdough starter care  (dense ")

    assert main(["search", "why does the sea rise", "--config", str(config), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert set(hits[0]["scores"]) == {"dense", "sparse"}
    fused = hits[0]["score"]
    assert fused not in hits[0]["scores"].values() and f"{fused:.3f}" not in first


def test_a_cli_search_is_counted_with_the_services_searches(
        notes: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """`tessera search` records a search_requests row (interface cli) that the dashboard's
    latency chart counts; no query text unless api.log_queries."""
    from tessera.core.events import read_events
    from tessera.core.settings import load_settings
    from tessera.service.report_data import latency_by_day

    config, folder = notes
    main(["ingest", str(folder), "--config", str(config), "-q"])
    settings = load_settings(config)
    before = len(read_events(settings.events_dir, "search_requests"))
    assert main(["search", "sourdough", "-k", "2", "--mode", "sparse", "--config", str(config),
                 "-q"]) == 0
    capsys.readouterr()
    rows = read_events(settings.events_dir, "search_requests")
    assert len(rows) == before + 1
    row = max((r for r in rows if r["interface"] == "cli"), key=lambda r: r["recorded_at"])
    assert (row["interface"], row["route"], row["status"], row["mode"], row["k"], row["hits"]) == (
        "cli", "cli/search", 200, "sparse", 2, 1)
    assert row["query"] is None and row["latency_ms"] > 0 and row["engine_ms"] is not None
    p50 = [d for d in latency_by_day(rows, row["recorded_at"]) if d["stat"] == "p50"]
    cli_searches = sum(r["interface"] == "cli" for r in rows)  # this module's, all today
    assert p50 and p50[-1]["searches"] == cli_searches >= 1
