"""The analysts' marts: dbt builds them from run events into an atomically swapped DuckDB file."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tessera.core.errors import MartsError
from tessera.core.events import SCHEMAS, EventLog
from tessera.core.settings import Settings, SourceConfig
from tessera.jobs.marts import (
    DBT_PROJECT_DIR,
    ENV_DUCKDB_PATH,
    ENV_EVENTS_DIR,
    MartsBusyError,
    _prepare_events,
    build_marts,
    generate_docs,
)
from tests.support.events import DAY1, DAY2, write_docs, write_run, write_two_runs

pytestmark = pytest.mark.usefixtures("prefect_server")

MARTS = [
    "fct_ingest_runs", "fct_daily_ingest_by_source", "dim_sources", "fct_contract_failures",
    "fct_embedding_cost", "fct_index_size", "fct_prune_runs", "fct_retrieval_quality",
]


def _settings(home: Path, tmp: Path) -> Settings:
    (tmp / "docs").mkdir(exist_ok=True)
    (tmp / "notes").mkdir(exist_ok=True)
    return Settings(
        home=home,
        sources=[
            SourceConfig(name="docs", path=tmp / "docs", ttl="7d"),
            SourceConfig(name="notes", path=tmp / "notes", ttl="none", schedule="0 * * * *"),
        ],
    )


def query(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the warehouse the way an analyst would (a plain connection, closed after)."""
    con = duckdb.connect(str(warehouse))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """One warehouse built from two recorded runs, shared by the read-only checks below."""
    tmp = tmp_path_factory.mktemp("marts")
    settings = _settings(tmp / "home", tmp)
    write_two_runs(settings.events_dir)
    return settings, build_marts(settings)


def test_build_reports_what_it_built(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, summary = built
    assert summary["status"] == "success"
    assert summary["warehouse"] == str(settings.warehouse_path)
    assert summary["models"] >= 19 and summary["tests"] >= 80 and summary["seeds"] == 1
    assert summary["failures"] == []
    # dbt's paths were set for the build only, and its artifacts stayed out of the repo.
    assert ENV_DUCKDB_PATH not in os.environ and ENV_EVENTS_DIR not in os.environ
    assert (settings.home / "marts" / "target" / "run_results.json").exists()
    assert not (DBT_PROJECT_DIR / "target").exists()
    assert not (settings.home / ".marts-build" / "warehouse.duckdb").exists()


def test_ingest_runs_one_row_per_run(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    rows = query(settings.warehouse_path, """
        select run_id, status, documents_seen, documents_indexed, documents_unchanged,
               documents_quarantined, documents_deleted, source_names, documents_per_second,
               embed_seconds
        from fct_ingest_runs order by run_id""")
    assert rows == [
        ("20240501T100000-cpu00001", "completed", 5, 4, 0, 1, 0, "docs,notes", 0.5, 0.1),
        ("20240502T100000-gpu00002", "completed", 4, 1, 3, 0, 1, "docs,notes", 0.2, 0.1),
    ]


def test_daily_rollup_matches_the_runs(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    daily = query(settings.warehouse_path, """
        select source_day_id, documents_seen, documents_indexed, documents_unchanged,
               documents_quarantined, documents_deleted, chunks_indexed
        from fct_daily_ingest_by_source order by 1""")
    assert daily == [
        ("docs/2024-05-01", 3, 3, 0, 0, 0, 6),
        ("docs/2024-05-02", 3, 1, 2, 0, 0, 2),
        ("notes/2024-05-01", 2, 1, 0, 1, 0, 2),
        ("notes/2024-05-02", 1, 0, 1, 0, 1, 0),
    ]
    totals = query(settings.warehouse_path, """
        select (select sum(documents_seen) from fct_daily_ingest_by_source),
               (select sum(documents_seen) from fct_ingest_runs),
               (select sum(documents_indexed) from fct_daily_ingest_by_source),
               (select sum(documents_indexed) from fct_ingest_runs)""")
    assert totals == [(9, 9, 5, 5)]


def test_embedding_cost_cpu_free_gpu_priced(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    rows = query(settings.warehouse_path, """
        select run_id, is_gpu, gpu_seconds, estimated_cost_usd, is_price_unknown
        from fct_embedding_cost order by run_id""")
    assert rows[0] == ("20240501T100000-cpu00001", False, 0.0, 0.0, False)
    run_id, is_gpu, gpu_seconds, cost, unknown = rows[1]
    assert (is_gpu, gpu_seconds, unknown) == (True, 100.0, False)
    assert cost == pytest.approx(100 * 0.000222)


def test_contract_failures_by_day_source_suite(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    rows = query(settings.warehouse_path, """
        select failure_id, failed_checks, unexpected_count, quarantined_records, top_reason
        from fct_contract_failures""")
    assert rows == [("2024-05-01/notes/text_documents/min_length", 1, 1, 1, "text is empty")]


@pytest.fixture(scope="module")
def rechecked(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A warehouse built from a day on which two runs both refused the same two bad files, and
    from searches the service answered, rejected (`hybird`, a 401, a 429) or failed."""
    tmp = tmp_path_factory.mktemp("rechecked")
    settings = _settings(tmp / "home", tmp)
    for n, run_id in enumerate(("20240501T100000-check001", "20240501T120000-check002")):
        log = EventLog(settings.events_dir, run_id)
        at = DAY1 + timedelta(hours=2 * n)
        write_run(log, at, backend="local", device="cpu", gpu_type=None, seen=2, indexed=0,
                  unchanged=0, quarantined=2, deleted=0, chunks_embedded=0, points_upserted=0,
                  seconds=1.0, gpu_seconds=0.0)
        write_docs(log, at, "notes", "quarantined", 2)
        for i in range(2):
            log.add("quarantine", source="notes", doc_id=f"notes-{i}", uri=f"notes/{i}.txt",
                    suite="text_documents", expectation="min_length", observed="0 chars",
                    reason="text is empty", content_hash=f"h{i}", recorded_at=at)
        log.flush()
    api = EventLog(settings.events_dir, "20240501T090000-api00001")
    for status, mode in ((200, "dense"), (200, "hybrid"), (422, "hybird"), (401, None),
                         (429, None), (503, None)):
        api.add("search_requests", request_id=f"{status}-{mode}", interface="mcp",
                route="tool/search", status=status, mode=mode, latency_ms=5.0,
                recorded_at=DAY1)
    # A search from the page's search box (the app records it as interface "page").
    api.add("search_requests", request_id="page-dense", interface="page", route="page/search",
            status=200, mode="dense", latency_ms=7.0, recorded_at=DAY1)
    api.flush()
    build_marts(settings)
    return settings


def test_a_bad_file_rechecked_by_a_second_run_counts_once(rechecked: Settings) -> None:
    """Two bad files, each refused by two runs: 2 quarantined records (in 2 runs), not 4; and
    both are still quarantined, counted once."""
    assert query(rechecked.warehouse_path, "select sum(quarantined_records) "
                 "from fct_contract_failures") == [(2,)]
    assert query(rechecked.warehouse_path, """
        select failure_id, quarantine_runs, currently_quarantined_records
        from fct_contract_failures""") == [("2024-05-01/notes/text_documents/min_length", 2, 2)]


def test_only_searches_that_ran_have_a_mode(rechecked: Settings) -> None:
    """A rejected `hybird` request (as an older MCP server recorded it) is no `hybird` row, and
    failed requests are not mode `default`: they are rejected or failed, with no mode."""
    modes = query(rechecked.warehouse_path, "select distinct search_mode from fct_search_requests")
    assert {mode for (mode,) in modes} == {"dense", "hybrid", None}
    rows = query(rechecked.warehouse_path, """
        select request_status, search_mode, requests, rate_limited_requests
        from fct_search_requests order by 1, 2""")
    assert rows == [("answered", "dense", 2, 0), ("answered", "hybrid", 1, 0),
                    ("failed", None, 1, 0), ("rejected", None, 3, 1)]  # dense: MCP and the page


def test_index_size_and_pruning(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    latest = query(settings.warehouse_path, """
        select source, points from fct_index_size where is_latest order by source""")
    assert latest == [("docs", 4), ("notes", 2)]
    pruned = query(settings.warehouse_path, """
        select sum(points_pruned) from fct_index_size where is_prune_run""")
    assert pruned == [(2,)]
    assert query(settings.warehouse_path, "select points_deleted from fct_prune_runs") == [(2,)]


def test_dim_sources_config_and_freshness(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    rows = query(settings.warehouse_path, """
        select source, is_configured, ttl_seconds, schedule, runs, current_points,
               freshness_status, cast(first_seen_at as date), cast(last_seen_at as date)
        from dim_sources order by source""")
    assert [r[:7] for r in rows] == [
        ("docs", True, 7 * 86400, None, 2, 4, "stale"),
        ("notes", True, None, "0 * * * *", 2, 2, "stale"),
    ]
    assert str(rows[0][7]) == "2024-05-01" and str(rows[0][8]) == "2024-05-02"


def test_retrieval_quality_empty_before_quality_runs(
    built: tuple[Settings, dict[str, Any]],
) -> None:
    settings, _ = built
    assert query(settings.warehouse_path, "select count(*) from fct_retrieval_quality") == [(0,)]
    columns = {r[0] for r in query(settings.warehouse_path, "describe fct_retrieval_quality")}
    assert {"run_id", "metric", "metric_value", "previous_value"} <= columns


def test_reader_in_another_process(built: tuple[Settings, dict[str, Any]]) -> None:
    """An analyst's read-only session sees every mart (and the staging views still resolve)."""
    settings, _ = built
    code = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(con.execute('select count(*) from stg_tessera__ingest_runs').fetchone()[0], "
        "sorted(r[0] for r in con.execute('show tables').fetchall()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(settings.warehouse_path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("2 ")
    for mart in MARTS:
        assert mart in out


def test_readme_questions_run(built: tuple[Settings, dict[str, Any]]) -> None:
    """Every SQL example in the analysts' README and docs page runs, through Python's duckdb,
    against a real warehouse."""
    pages = [DBT_PROJECT_DIR / "README.md", DBT_PROJECT_DIR.parent / "docs" / "marts.md"]
    blocks = [b for page in pages
              for b in re.findall(r"```sql\n(.*?)```", page.read_text(encoding="utf-8"), re.S)]
    statements = [q for b in blocks for q in b.split(";") if q.strip()]
    assert len(statements) >= 8
    settings, _ = built
    con = duckdb.connect(str(settings.warehouse_path), read_only=True)
    try:
        for sql in statements:
            con.execute(sql).fetchall()
    finally:
        con.close()


def test_docs_python_one_liners_open_the_warehouse(built: tuple[Settings, dict[str, Any]],
                                                   tmp_path: Path) -> None:
    """The docs' way to open the warehouse from the shell (Python's duckdb, no duckdb CLI) runs
    as written, from a directory whose .tessera is a built home."""
    pages = [DBT_PROJECT_DIR / "README.md", DBT_PROJECT_DIR.parent / "docs" / "marts.md"]
    lines = [re.search(r'python -c "(.*)"', line) for page in pages
             for line in page.read_text(encoding="utf-8").splitlines()
             if "python -c" in line and "import duckdb" in line]
    assert len(lines) == 2 and all(lines)
    (tmp_path / ".tessera").symlink_to(built[0].home)
    for found in lines:
        assert found is not None
        out = subprocess.run([sys.executable, "-c", found.group(1)], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout
        assert "20240502T100000-gpu00002" in out and "completed" in out


@pytest.fixture(scope="module")
def docs_site(built: tuple[Settings, dict[str, Any]]) -> Path:
    """The dbt docs site of the shared warehouse (with its manifest.json and catalog.json)."""
    return generate_docs(built[0])


def test_docs_site_is_generated_offline(built: tuple[Settings, dict[str, Any]],
                                        docs_site: Path) -> None:
    settings, _ = built
    page = docs_site
    assert page.name == "static_index.html"
    html = page.read_text(encoding="utf-8")
    assert "fct_embedding_cost" in html and "one row per run" in html.lower()
    assert not (settings.home / ".marts-build" / "warehouse.duckdb").exists()


def test_every_model_column_is_documented(docs_site: Path) -> None:
    """Each column of each model, as the catalog read it from the built warehouse, has a
    description in the manifest (the project's YAML): no column is left for analysts to guess."""
    manifest = json.loads((docs_site.parent / "manifest.json").read_text(encoding="utf-8"))
    catalog = json.loads((docs_site.parent / "catalog.json").read_text(encoding="utf-8"))
    models = {k: v for k, v in catalog["nodes"].items() if k.startswith("model.")}
    assert len(models) >= 20
    missing = []
    for unique_id, node in models.items():
        documented = {name.lower() for name, column in manifest["nodes"][unique_id]["columns"].items()
                      if column.get("description", "").strip()}
        missing += [f"{node['metadata']['name']}.{name.lower()}" for name in node["columns"]
                    if name.lower() not in documented]
    assert missing == []


def test_empty_events_then_failed_build_keeps_warehouse(tmp_path: Path) -> None:
    """No events at all builds valid, empty marts; a failing build leaves that file in place."""
    settings = _settings(tmp_path / "home", tmp_path)
    summary = build_marts(settings)
    assert summary["status"] == "success"
    counts = query(settings.warehouse_path, " union all ".join(
        f"select '{m}', count(*) from {m}" for m in MARTS))
    assert dict(counts) == {m: 2 if m == "dim_sources" else 0 for m in MARTS}
    before = settings.warehouse_path.stat().st_ino

    # A run whose status breaks an error-level test: the build fails, the old file stays.
    bad = EventLog(settings.events_dir, "20240501T000000-bad00001")
    write_run(bad, DAY1, status="exploded", seen=0, indexed=0, unchanged=0, quarantined=0,
              deleted=0, seconds=1.0)
    bad.flush()
    with pytest.raises(MartsError, match="left as it was") as err:
        build_marts(settings)
    assert "accepted_values_stg_tessera__ingest_runs_status" in str(err.value)
    assert settings.warehouse_path.stat().st_ino == before
    assert query(settings.warehouse_path, "select count(*) from fct_ingest_runs") == [(0,)]


def _hold_lock(lock: Path) -> subprocess.Popen[str]:
    """Another process holding the marts lock, as a concurrent build would."""
    code = (
        "import fcntl, os, sys\n"
        f"f = open({str(lock)!r}, 'a+')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    lock.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_concurrent_build_waits_and_readers_never_see_half_a_file(
    built: tuple[Settings, dict[str, Any]], caplog: pytest.LogCaptureFixture,
) -> None:
    settings, _ = built
    lock = settings.home / "locks" / "marts.lock"
    holder = _hold_lock(lock)
    try:
        with pytest.raises(MartsBusyError, match=f"another marts build is running \\(pid {holder.pid}\\)"):
            build_marts(settings, lock_timeout=0.5)

        # A build that may wait does, and starts once the other one ends.
        result: dict[str, Any] = {}
        waiter = threading.Thread(
            target=lambda: result.update(build_marts(settings, lock_timeout=60)))
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="filelock"):
            waiter.start()
            # Refused twice: it found the lock held, waited, and tried again instead of failing.
            deadline = time.monotonic() + 30
            while sum(f"not acquired on {lock}" in r.getMessage() for r in caplog.records) < 2:
                assert time.monotonic() < deadline and waiter.is_alive(), "the build never waited"
                time.sleep(0.01)
        assert waiter.is_alive() and not result
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()

    # While it builds, every reader gets a complete warehouse (the old one, then the new one).
    reads = 0
    while waiter.is_alive():
        assert query(settings.warehouse_path, "select count(*) from fct_ingest_runs") == [(2,)]
        reads += 1
        time.sleep(0.05)
    waiter.join()
    assert result["status"] == "success" and reads > 10


def test_schema_file_follows_schemas(tmp_path: Path) -> None:
    """A `_schema.parquet` written before SCHEMAS gained a column is rewritten before a build."""
    old = pa.schema([f for f in SCHEMAS["ingest_runs"] if f.name != "gpu_seconds"])
    folder = tmp_path / "ingest_runs"
    folder.mkdir(parents=True)
    pq.write_table(old.empty_table(), folder / "_schema.parquet")
    _prepare_events(tmp_path)
    assert pq.read_schema(folder / "_schema.parquet").equals(SCHEMAS["ingest_runs"])
    for table in SCHEMAS:
        assert (tmp_path / table / "_schema.parquet").exists()


def test_a_run_whose_outcomes_do_not_add_up_fails_the_build(tmp_path: Path) -> None:
    """seen = indexed + unchanged + quarantined is an invariant: a breach is an error, not a
    warning, and the warehouse stays as it was."""
    settings = _settings(tmp_path / "home", tmp_path)
    write_two_runs(settings.events_dir)
    bad = EventLog(settings.events_dir, "20240503T100000-bad00003")
    day3 = DAY2 + timedelta(days=1)
    write_run(bad, day3, backend="local", device="cpu", gpu_type=None, seen=3, indexed=1,
              unchanged=0, quarantined=0, deleted=0, chunks_embedded=1, points_upserted=1,
              seconds=1.0, gpu_seconds=0.0)
    write_docs(bad, day3, "docs", "indexed", 1)
    bad.flush()
    with pytest.raises(MartsError, match="assert_run_outcomes_add_up"):
        build_marts(settings)
    assert not settings.warehouse_path.exists()


def test_a_build_is_retried_only_while_another_holds_the_lock() -> None:
    """Waiting out another build is worth a retry; a failing dbt test is not."""
    from tessera.core.steps import PlainSteps

    slept: list[float] = []
    steps = PlainSteps(sleep=slept.append)
    outcomes: list[Exception | None] = [MartsBusyError("busy (pid 1)"), None]

    def build() -> str:
        error = outcomes.pop(0)
        if error:
            raise error
        return "built"

    assert steps.run("build-marts", build, io=True) == "built" and slept == [2.0]
    with pytest.raises(MartsError, match="dbt build failed"):
        steps.run("build-marts", lambda: (_ for _ in ()).throw(MartsError("dbt build failed")),
                  io=True)
    assert slept == [2.0]


def test_ingest_twice_then_tessera_marts(
    make_config: Any, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real pipeline: two ingests (the second finds nothing new), then `tessera marts`.

    The second ingest also rebuilds the marts as its flow's last task (build_marts_task), and
    `tessera marts` then rebuilds them again from the same events.
    """
    from flows.ingest import ingest_flow
    from tessera.cli.main import main
    from tessera.core.settings import load_settings

    sources = [{"name": "docs", "path": str(corpus), "ttl": "7d"}]
    config = make_config(sources=sources)
    # Same home; this one has the ingest flow rebuild the marts as its last task.
    auto = make_config(sources=sources, name="auto.toml", marts={"build_after_ingest": True})
    first = ingest_flow(config=str(config))
    assert not load_settings(config).warehouse_path.exists()
    second = ingest_flow(config=str(auto))
    assert first["indexed"] > 0 and (second["indexed"], second["unchanged"]) == (0, first["seen"])
    built_by_flow = query(load_settings(config).warehouse_path,
                          "select count(*) from fct_ingest_runs")
    assert built_by_flow == [(2,)]
    capsys.readouterr()

    assert main(["marts", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # dbt printed nothing of its own
    assert summary["status"] == "success"
    warehouse = Path(summary["warehouse"])
    settings = load_settings(config)
    assert warehouse == settings.warehouse_path

    runs = query(warehouse, """
        select run_id, status, documents_seen, documents_indexed, documents_unchanged,
               documents_quarantined, chunks_embedded, points_upserted
        from fct_ingest_runs order by started_at""")
    assert runs == [
        (s["run_id"], "completed", s["seen"], s["indexed"], s["unchanged"], s["quarantined"],
         s["chunks_embedded"], s["points_upserted"])
        for s in (first, second)
    ]
    # The per-source daily roll-up adds up to the runs' own document events.
    rollup = query(warehouse, """
        select sum(documents_seen), sum(documents_indexed), sum(documents_unchanged),
               sum(documents_quarantined) from fct_daily_ingest_by_source""")
    events = query(warehouse, f"""
        select count(*) filter (where outcome <> 'deleted'),
               count(*) filter (where outcome = 'indexed'),
               count(*) filter (where outcome = 'unchanged'),
               count(*) filter (where outcome = 'quarantined')
        from read_parquet('{settings.events_dir}/documents_indexed/*.parquet')""")
    assert rollup == events
    assert rollup[0][:3] == (first["seen"] + second["seen"], first["indexed"],
                             second["unchanged"])
    # Both runs embedded on this machine's CPU: no GPU time, no cost.
    assert query(warehouse, """
        select count(*), sum(gpu_seconds), sum(estimated_cost_usd), bool_or(is_gpu)
        from fct_embedding_cost""") == [(2, 0.0, 0.0, False)]

    # A recorded GPU run (Modal, L4, 100 s) is priced at 100 x the seed's L4 price. Rebuild only
    # what the cost depends on: the marts left out of the selection stay in the warehouse.
    gpu = EventLog(settings.events_dir, "29990101T000000-gpu00003")
    write_run(gpu, datetime.now(UTC), backend="modal", device="L4", gpu_type="L4", seen=0,
              indexed=0, unchanged=0, quarantined=0, deleted=0, seconds=120.0,
              gpu_seconds=100.0)
    gpu.flush()
    partial = build_marts(settings, select="+fct_embedding_cost")
    assert partial["status"] == "success" and partial["models"] < 10
    cost = query(warehouse, """
        select gpu_type, gpu_seconds, estimated_cost_usd from fct_embedding_cost
        where run_id = '29990101T000000-gpu00003'""")
    assert cost[0][:2] == ("L4", 100.0) and cost[0][2] == pytest.approx(0.0222)
    assert query(warehouse, "select count(*) from fct_ingest_runs") == [(3,)]
    assert query(warehouse, "select count(*) from fct_daily_ingest_by_source")[0][0] >= 1
