"""Retrieval quality: through the ingest path, pytrec_eval metrics, events, artifact, gates."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.quality import quality_flow
from tessera.core.errors import QualityGateError
from tessera.core.events import EventLog, read_events, utcnow
from tessera.core.settings import QualityConfig, Settings, load_settings
from tessera.core.types import Hit
from tessera.jobs.quality import best_per_doc, check_gates, load_dataset, score
from tests.support.config import write_config
from tests.support.datasets import make_slice
from tests.support.paths import scifact_dir

pytestmark = pytest.mark.usefixtures("prefect_server")

SLICE_QUERIES = 12
SLICE_DISTRACTORS = 40


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SciFact slice and one home shared by this module (so the corpus is embedded once)."""
    root = tmp_path_factory.mktemp("quality")
    data = make_slice(root / "scifact-slice", SLICE_QUERIES, SLICE_DISTRACTORS)

    def config(name: str, **gates: Any) -> Path:
        return write_config(root / f"{name}.toml", {"home": str(root / "home")},
                            {"quality": gates} if gates else {}, [])
    return {"data": data, "config": config, "first": None}


def test_quality_indexes_through_ingest_and_scores(setup: dict[str, Any]) -> None:
    """Metrics in [0, 1], per-query events, one run event, an artifact; rerun embeds nothing."""
    config = setup["config"]("plain")
    settings = load_settings(config)
    first = quality_flow(dataset=str(setup["data"]), config=str(config))
    assert first["dataset"] == "scifact-slice" and first["queries"] == SLICE_QUERIES
    assert first["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # One collection per set and build settings (model, chunking): quality-<set>--<model>-<hash>.
    assert first["collection"].startswith("quality-scifact-slice--all-minilm-l6-v2-")
    for metric in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert 0.0 < first[metric] <= 1.0
    assert first["recall@100"] == 1.0  # every judged document is among fewer than 100
    assert first["chunks_embedded"] > SLICE_QUERIES  # the corpus went through ingest

    second = quality_flow(dataset=str(setup["data"]), config=str(config))
    assert second["chunks_embedded"] == 0  # unchanged documents are not embedded again
    assert {k: second[k] for k in ("ndcg@10", "mrr@10")} == {k: first[k] for k in ("ndcg@10", "mrr@10")}
    setup["first"] = first

    runs = read_events(settings.events_dir, "quality_runs")
    assert sorted((r["mode"], r["status"]) for r in runs) == sorted(
        [(m, "passed") for m in ("dense", "sparse", "hybrid")] * 2)
    # One index, three modes scored on it; the top level is the default mode's (hybrid).
    assert first["mode"] == "hybrid" and set(first["modes"]) == {"dense", "sparse", "hybrid"}
    assert {k: first[k] for k in first["modes"]["hybrid"]} == first["modes"]["hybrid"]
    assert first["modes"]["dense"] != first["modes"]["sparse"]
    per_query = [r for r in read_events(settings.events_dir, "quality_query_results") if r["run_id"] == first["run_id"]]
    assert len(per_query) == 3 * SLICE_QUERIES
    for mode, metrics in first["modes"].items():
        mine = [r for r in per_query if r["mode"] == mode]
        assert len(mine) == SLICE_QUERIES
        mean = sum(r["ndcg_at_10"] for r in mine) / SLICE_QUERIES
        assert mean == pytest.approx(metrics["ndcg@10"], abs=1e-5)
    ingests = read_events(settings.events_dir, "ingest_runs")
    assert [r["chunks_embedded"] for r in ingests] == [first["chunks_embedded"], 0]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["quality-scifact-slice"])))
    assert arts and arts[0].type == "table"
    table = json.loads(arts[0].data)
    assert {row["metric"] for row in table} == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert all({"dense", "sparse", "hybrid"} <= set(row) for row in table)  # side by side


def test_floor_breach_fails_naming_metric_value_and_gate(setup: dict[str, Any]) -> None:
    """An nDCG@10 below the configured floor fails the flow; the run is still recorded."""
    config = setup["config"]("floor", min_ndcg_at_10=1.01)
    with pytest.raises(QualityGateError, match=r"ndcg@10 = [01]\.\d{4} is below the floor "
                                               r"quality\.min_ndcg_at_10 = 1\.01"):
        quality_flow(dataset=str(setup["data"]), config=str(config))
    last = max(read_events(load_settings(config).events_dir, "quality_runs"), key=lambda r: r["started_at"])
    assert last["status"] == "failed" and "min_ndcg_at_10" in last["gate_message"]
    failed = [r for r in read_events(load_settings(config).events_dir, "quality_runs")
              if r["run_id"] == last["run_id"]]
    assert sorted(r["mode"] for r in failed) == ["dense", "hybrid", "sparse"]  # gates per mode


def test_drop_against_previous_run_fails(setup: dict[str, Any]) -> None:
    """A drop larger than max_drop against the previous run of the same set and model fails."""
    config = setup["config"]("drop", max_drop=0.02)
    settings = load_settings(config)
    baseline = setup["first"] or quality_flow(dataset=str(setup["data"]), config=str(config))
    log = EventLog(settings.events_dir, "seeded-better-run")
    sparse = baseline["modes"]["sparse"]
    log.add("quality_runs", dataset="scifact-slice", model_id=baseline["model"], queries=12,
            mode="sparse", ndcg_at_10=sparse["ndcg@10"] + 0.05, recall_at_10=sparse["recall@10"],
            recall_at_100=sparse["recall@100"], mrr_at_10=sparse["mrr@10"], status="passed",
            started_at=utcnow() - timedelta(seconds=1))
    log.flush()
    # The drop is measured against the previous run of the same mode: only sparse breaches.
    with pytest.raises(QualityGateError, match=r"sparse: ndcg@10 = .* dropped 0\.0500 from .*"
                                               r"\(run seeded-better-run\).*max_drop = 0\.02") as err:
        quality_flow(dataset=str(setup["data"]), config=str(config))
    assert "dense:" not in str(err.value) and "hybrid:" not in str(err.value)


def test_nightly_fails_on_a_breach_after_building_the_marts(setup: dict[str, Any]) -> None:
    """prune -> refresh-models -> quality -> marts: a breach fails the nightly, marts still built."""
    import subprocess
    import sys

    from flows.nightly import nightly_flow
    from tessera.core.errors import PipelineError

    config = setup["config"]("nightly", min_ndcg_at_10=1.01)
    config.write_text(config.read_text() + f'\n[[quality.sets]]\npath = "{setup["data"]}"\n'
                      'name = "nightly-set"\n')
    with pytest.raises(PipelineError, match=r"nightly run failed in quality nightly-set: .*"
                                            r"is below the floor"):
        nightly_flow(config=str(config))
    settings = load_settings(config)
    assert [r["status"] for r in read_events(settings.events_dir, "model_cache_events")][-1] == "ok"
    # Read the warehouse from another process: dbt ran in this one (DuckDB config clash).
    query = ("import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True); print(c.execute("
             "\"select count(*), bool_or(not is_passed) from fct_retrieval_quality "
             "where dataset = 'nightly-set'\").fetchone())")
    out = subprocess.run([sys.executable, "-c", query, str(settings.warehouse_path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(12, True)"  # one failed run, three modes, four metrics


def test_gates_are_checked_per_metric() -> None:
    """Pure gate logic: the floor is on nDCG@10, the drop on every metric; no previous, no drop."""
    gates = QualityConfig(min_ndcg_at_10=0.5, max_drop=0.02)
    now = {"ndcg@10": 0.6, "recall@10": 0.7, "recall@100": 0.9, "mrr@10": 0.5}
    assert check_gates(gates, now, None) == []
    prev = {"run_id": "r1", "ndcg_at_10": 0.61, "recall_at_10": 0.75, "recall_at_100": 0.9,
            "mrr_at_10": 0.52}
    (breach,) = check_gates(gates, now, prev)
    assert breach.startswith("recall@10 = 0.7000 dropped 0.0500 from 0.7500 (run r1)")
    assert len(check_gates(gates, {**now, "ndcg@10": 0.4}, None)) == 1


def test_scoring_uses_trec_eval_semantics() -> None:
    """Best chunk per document, then pytrec_eval: known values on a tiny judged run."""
    hits = [Hit("p1", 0.9, {"doc_id": "a"}), Hit("p2", 0.8, {"doc_id": "b"}),
            Hit("p3", 0.85, {"doc_id": "a"}), Hit("p4", 0.7, {"doc_id": "c"})]
    assert best_per_doc(hits, 2) == {"a": 0.9, "b": 0.8}
    run = {"q": {"a": 0.9, "b": 0.8, "c": 0.7}}
    result = score({"q": {"b": 1}}, run)["q"]
    assert result["mrr@10"] == pytest.approx(0.5)
    assert result["ndcg@10"] == pytest.approx(0.63093, abs=1e-5)  # 1 / log2(3)
    assert (result["recall@10"], result["recall@100"]) == (1.0, 1.0)
    far = {"q": {f"d{i:02d}": 1.0 - i / 100 for i in range(20)}}
    assert score({"q": {"d15": 1}}, far)["q"]["mrr@10"] == 0.0  # rank 16: outside MRR@10


def test_limited_run_is_its_own_series_and_cli(setup: dict[str, Any],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--limit-queries scores the first N judged queries under its own dataset label."""
    from tessera.cli.main import main

    data = load_dataset(setup["data"], limit_queries=5)
    assert data.name == "scifact-slice-first5" and len(data.queries) == 5
    config = setup["config"]("cli")
    assert main(["quality", str(setup["data"]), "--limit-queries", "5", "--json",
                 "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"dataset", "model", "queries", "ndcg@10", "recall@10", "recall@100", "mrr@10",
            "seconds", "mode", "modes"} <= set(out)
    assert set(out["modes"]["sparse"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert (out["dataset"], out["queries"], out["chunks_embedded"]) == ("scifact-slice-first5", 5, 0)


MTEB_SCIFACT_NDCG10 = 0.645  # published; MTEB embeds each document's first 256 tokens only
MTEB_SCIFACT_NDCG10_EXACT = 0.64508
# This pipeline on torch fp32 (sentence-transformers), documents scored by their best chunk:
# the reference the default runtime must stay within 0.005 of (benchmarks/REPORT.md, goal 2).
TORCH_FP32_PIPELINE_NDCG10 = 0.65414
OPENVINO_PIPELINE_NDCG10 = 0.6557  # dense, the default runtime, before hybrid search


def first_chunk_ndcg(settings: Settings, dataset: Path, collection: str) -> float:
    """nDCG@10 counting only each document's first window (what MTEB's truncation embeds)."""
    from tessera.core.query import StoreQuery
    from tessera.jobs.quality import embed_queries, mean_metrics
    from tessera.store import open_store

    data = load_dataset(dataset)
    qids = list(data.queries)
    vectors = embed_queries(settings, [data.queries[q] for q in qids])
    store = open_store(settings)
    try:
        hits = store.query_batch(collection, [
            StoreQuery(limit=3000, dense=v, fields=("doc_id", "chunk_index"), exact=True)
            for v in vectors])
    finally:
        store.close()
    run = {q: best_per_doc([h for h in found if h.payload["chunk_index"] == 0], 100)
           for q, found in zip(qids, hits, strict=True)}
    return mean_metrics(score(data.qrels, run))["ndcg@10"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_scifact_matches_mteb(tmp_path: Path) -> None:
    """All of SciFact through the pipeline on the default runtime (OpenVINO bf16 on this CPU).

    Embeds 9,634 chunks of 5,183 documents: ~1.5 min on 2 idle cores (torch fp32: ~6 min).
    Counting only first chunks must reproduce MTEB's truncated figure (0.64508) within 0.003, so
    pooling and normalization lose nothing. Scoring documents by their best chunk must stay within
    0.005 of the same pipeline on torch fp32 (0.65414): what the default runtime may cost.
    Measured with OpenVINO bf16: 0.65566 (best chunk).
    The same index scored sparse (Qdrant Edge BM25) and hybrid (RRF in the engine): hybrid must
    reach 0.71 and keep at least dense's recall@100; sparse 0.675 (issue 15).
    """
    config = write_config(tmp_path / "tessera.toml", {"home": str(tmp_path / "home")}, {}, [])
    result = quality_flow(dataset=str(scifact_dir()), config=str(config))
    assert result["queries"] == 300
    dense, sparse, hybrid = (result["modes"][m] for m in ("dense", "sparse", "hybrid"))
    assert abs(dense["ndcg@10"] - TORCH_FP32_PIPELINE_NDCG10) <= 0.005, result
    assert abs(dense["ndcg@10"] - OPENVINO_PIPELINE_NDCG10) <= 0.005, result
    assert dense["ndcg@10"] >= MTEB_SCIFACT_NDCG10, result  # windows past the first only add
    assert dense["recall@100"] > 0.9, result
    assert sparse["ndcg@10"] >= 0.675, result
    assert hybrid["ndcg@10"] >= 0.71, result
    assert hybrid["recall@100"] >= dense["recall@100"], result
    assert result["mode"] == "hybrid" and result["ndcg@10"] == hybrid["ndcg@10"]
    first = first_chunk_ndcg(load_settings(config), scifact_dir(), result["collection"])
    assert abs(first - MTEB_SCIFACT_NDCG10_EXACT) <= 0.003, first
