"""The marts over the paired quality comparisons: fct_quality_regressions lists the queries a
change that went through made worse, fct_retrieval_quality carries a nightly run's comparison.
Built by `dbt build` from events written as the jobs write them (no model, no ingest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tessera.core.events import EventLog
from tessera.core.settings import Settings
from tessera.jobs.marts import build_marts

AT = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def _comparison(log: EventLog, kind: str, subject: str, sides: tuple[str, str],
                decision: str, changes: dict[str, tuple[float, float]], p_value: float) -> None:
    """One comparison as tessera.jobs.significance records it: a row per metric, and a row per
    query and metric that scored differently (`changes`: query -> baseline, candidate)."""
    for metric in METRICS:
        log.add("quality_comparisons", kind=kind, subject=subject, dataset="scifact",
                mode="dense", baseline=sides[0], candidate=sides[1], metric=metric, queries=3,
                baseline_mean=0.6, candidate_mean=0.55, difference=-0.05, ci_low=-0.12,
                ci_high=0.02, p_value=p_value, alpha=0.05, power=0.4, power_drop=0.02,
                queries_needed=40, significantly_worse=p_value < 0.05,
                significantly_better=False, gated=metric == "ndcg@10", decision=decision,
                recorded_at=AT)
        for query, (before, after) in changes.items():
            log.add("quality_query_changes", kind=kind, subject=subject, dataset="scifact",
                    mode="dense", metric=metric, query_id=query, baseline=before,
                    candidate=after, difference=after - before, recorded_at=AT)


def _migration(events: Path, run_id: str, decision: str, changes: dict[str, tuple[float, float]]
               ) -> None:
    log = EventLog(events, run_id)
    log.add("migrations", alias="docs", decision=decision, from_collection="docs_v1",
            to_collection=f"docs_{run_id}", from_model="m", to_model="m2", settings_hash="h",
            settings="{}", metrics="{}", live_ndcg_at_10=0.6, shadow_ndcg_at_10=0.55,
            reason="", started_at=AT, finished_at=AT)
    _comparison(log, "migration", "docs", ("docs_v1", f"docs_{run_id}"), decision, changes, 0.3)
    log.flush()


def _quality_run(events: Path, run_id: str, day: int, previous: str | None) -> None:
    log = EventLog(events, run_id)
    log.add("quality_runs", dataset="scifact", model_id="m", collection="docs", mode="dense",
            queries=3, ndcg_at_10=0.6, recall_at_10=0.7, recall_at_100=0.9, mrr_at_10=0.5,
            seconds=1.0, status="passed", started_at=AT.replace(day=day))
    if previous:
        _comparison(log, "nightly", "scifact", (previous, run_id), "passed",
                    {"q9": (0.5, 0.25)}, 0.0123)
    log.flush()


def _tuning_run(events: Path, run_id: str, decision: str, p_value: float) -> None:
    """A tuning run as tessera.jobs.tune records it: its summary and its test-split comparison
    (kind tune, subject the collection, baseline the current settings, candidate the tuned)."""
    log = EventLog(events, run_id)
    log.add("tuning_runs", dataset="scifact", collection="docs", mode="dense", decision=decision,
            reason=None if decision == "applied" else "ndcg@10 significantly worse",
            current="doc_chunks=1, fusion=rrf, rrf_k=60",
            chosen="doc_chunks=2, fusion=rrf, rrf_k=60", trials=3, train_queries=8,
            test_queries=3, train_ndcg_at_10_current=0.5, train_ndcg_at_10_chosen=0.625,
            test_ndcg_at_10_current=0.6, test_ndcg_at_10_chosen=0.55, p_value=p_value,
            seconds=2.5, started_at=AT, finished_at=AT)
    _comparison(log, "tune", "docs", ("current", "tuned"), decision, {"q4": (0.7, 0.6)},
                p_value)
    log.flush()


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    settings = Settings(home=tmp_path_factory.mktemp("quality-marts") / "home")
    events = settings.events_dir
    _migration(events, "mig-switched", "switched", {"q1": (0.8, 0.4), "q2": (0.3, 0.9)})
    _migration(events, "mig-refused", "refused", {"q1": (0.8, 0.1), "q3": (0.5, 0.2)})
    _quality_run(events, "qr-1", 1, None)
    _quality_run(events, "qr-2", 2, "qr-1")
    _tuning_run(events, "tune-applied", "applied", 0.3)
    _tuning_run(events, "tune-kept", "kept", 0.01)
    build_marts(settings)
    return settings.warehouse_path


def query(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_regressions_are_the_worse_queries_of_the_switched_migration(warehouse: Path) -> None:
    rows = query(warehouse, """
        select query_id, metric, baseline, candidate, baseline_score, candidate_score,
               difference, p_value, decision
        from fct_quality_regressions
        where kind = 'migration' and subject = 'docs'
        order by metric, query_id""")
    # q1 got worse on every metric; q2 got better; the refused attempt's losses changed nothing
    assert rows == [
        ("q1", metric, "docs_v1", "docs_mig-switched", 0.8, 0.4, pytest.approx(-0.4), 0.3,
         "switched")
        for metric in sorted(m.replace("@", "_at_") for m in METRICS)
    ]


def test_a_passed_nightly_run_lists_its_worse_queries(warehouse: Path) -> None:
    rows = query(warehouse, """
        select run_id, query_id, baseline, candidate from fct_quality_regressions
        where kind = 'nightly' and metric = 'ndcg_at_10'""")
    assert rows == [("qr-2", "q9", "qr-1", "qr-2")]


def test_retrieval_quality_carries_the_nightly_comparison(warehouse: Path) -> None:
    rows = query(warehouse, """
        select run_id, metric, p_value, ci_low, ci_high, power, is_significantly_worse
        from fct_retrieval_quality
        where metric in ('ndcg_at_10', 'mrr_at_10')
        order by run_id, metric""")
    assert rows == [
        ("qr-1", "mrr_at_10", None, None, None, None, None),
        ("qr-1", "ndcg_at_10", None, None, None, None, None),
        ("qr-2", "mrr_at_10", 0.0123, -0.12, 0.02, 0.4, True),
        ("qr-2", "ndcg_at_10", 0.0123, -0.12, 0.02, 0.4, True),
    ]
    assert query(warehouse, "select count(*) from fct_retrieval_quality") == [(8,)]


def test_tuning_runs_carry_the_test_split_check(warehouse: Path) -> None:
    rows = query(warehouse, """
        select tuning_run_id, collection, chosen_settings, decision, is_applied, train_gain,
               test_difference, ci_low, ci_high, p_value, power, is_significantly_worse
        from fct_tuning_runs order by tuning_run_id""")
    chosen = "doc_chunks=2, fusion=rrf, rrf_k=60"
    # the interval and power come from the run's tune comparison of ndcg@10
    assert rows == [
        ("tune-applied", "docs", chosen, "applied", True, 0.125, pytest.approx(-0.05), -0.12,
         0.02, 0.3, 0.4, False),
        ("tune-kept", "docs", chosen, "kept", False, 0.125, pytest.approx(-0.05), -0.12, 0.02,
         0.01, 0.4, True),
    ]
    # only the applied run's worse queries count as regressions
    assert query(warehouse, """
        select distinct run_id, query_id from fct_quality_regressions where kind = 'tune'
        """) == [("tune-applied", "q4")]
