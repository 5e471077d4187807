"""Retrieval quality: index a BEIR-layout set through the ingest path, score it, enforce the gates.

The corpus goes through the ingest job like any source (contracts, chunking, diff, upsert), into a
collection named after the dataset and the model, so the score measures the pipeline itself and a
second run re-embeds nothing. Documents longer than the model's window have several chunks; a
document's score is its best chunk's. Metrics come from pytrec_eval (trec_eval), never by hand.
Every search mode the collection supports (dense, sparse, hybrid) is scored on the same index in
one run, and the gates apply per mode; the top-level metrics are those of `search.mode`.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models import get_spec, make_backend
from tessera.core import telemetry
from tessera.core.beir import load_test_set
from tessera.core.errors import QualityGateError, VectorStoreError
from tessera.core.events import EventLog, new_run_id, read_events, utcnow
from tessera.core.query import MODES, SearchConfig, StoreQuery
from tessera.core.settings import QualityConfig, Settings, SourceConfig
from tessera.core.sparse import Bm25Encoder, config_from_identity
from tessera.core.steps import PlainSteps, Steps
from tessera.core.tuned import search_settings, tuned_values
from tessera.core.types import Hit, Match
from tessera.ingest.identity import identity_for, target_collection
from tessera.jobs import significance
from tessera.jobs.significance import Comparison, compare_runs, power_notes
from tessera.store import VectorStore, open_store
from tessera.store.base import doc_scores

logger = logging.getLogger(__name__)
TOP_DOCS = 100  # recall@100 needs the 100 best documents per query
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
_TREC = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100"}
_ALL = Match()  # no conditions: every point
_COLUMN = {"ndcg@10": "ndcg_at_10", "recall@10": "recall_at_10", "recall@100": "recall_at_100",
           "mrr@10": "mrr_at_10"}


@dataclass(frozen=True)
class QualityData:
    """A labelled set: the queries that have judgements, and the judgements."""

    name: str
    path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes (collection and artifact keys accept these)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def load_dataset(path: Path, name: str | None = None, limit_queries: int | None = None,
                 split: str = "test") -> QualityData:
    """Read queries.jsonl and qrels/<split>.tsv; keep only the queries that have judgements."""
    path = Path(path)
    texts, qrels = load_test_set(path, split)
    ids = list(qrels)[:limit_queries] if limit_queries else list(qrels)
    label = name or path.name
    if limit_queries and limit_queries < len(qrels):
        label = f"{label}-first{limit_queries}"  # its own series: not comparable with the full set
    return QualityData(name=label, path=path, queries={q: texts[q] for q in ids},
                       qrels={q: dict(qrels[q]) for q in ids})


def quality_collection(settings: Settings, dataset_dir: Path, name: str | None) -> str:
    """The collection a set is indexed into: one per dataset and identity (model, chunking and
    extra settings), so the set measures what the configuration builds, and a migration can
    score the live and the shadow settings side by side (tessera/jobs/migration/parts.py)."""
    spec = get_spec(settings)
    return target_collection(f"quality-{slug(name or Path(dataset_dir).name)}", spec,
                             identity_for(settings, spec))


def quality_source(dataset_dir: Path, name: str | None, collection: str) -> SourceConfig:
    """The set's corpus as an ordinary BEIR source; its points never expire."""
    return SourceConfig(name=f"quality-{slug(name or Path(dataset_dir).name)}", kind="beir",
                        path=Path(dataset_dir), ttl=None, collection=collection)


def dataset_settings(settings: Settings, dataset: Path | str, name: str | None) -> Settings:
    """Settings whose only source is the set's corpus, written to its own collection."""
    collection = quality_collection(settings, Path(dataset), name)
    return settings.model_copy(update={"sources": [quality_source(Path(dataset), name, collection)]})


def embed_queries(settings: Settings, queries: list[str]) -> np.ndarray:
    """Embed the query texts with the configured model (its query mode)."""
    backend = make_backend(settings, get_spec(settings), pending_chunks=len(queries))
    try:
        return backend.embed_queries(queries)
    finally:
        backend.close()


def collection_modes(settings: Settings, collection: str) -> tuple[str, ...]:
    """The modes a collection can be searched in: all three, or dense only without sparse vectors."""
    store = open_store(settings)
    try:
        info = store.get_collection(collection)
    finally:
        store.close()
    if info is None:
        raise VectorStoreError(f"collection {collection!r} does not exist; run `tessera ingest` first")
    return MODES if info.sparse is not None else ("dense",)


def retrieve(settings: Settings, collection: str, query_ids: list[str],
             vectors: np.ndarray | None, mode: str = "dense",
             texts: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Best TOP_DOCS documents per query, with the collection's search settings (tuned or the
    config's; dense side exact).

    `vectors` are the embedded queries (dense, hybrid); `texts` the query texts (sparse, hybrid),
    turned into BM25 vectors with the config the collection records."""
    cfg = search_settings(settings, collection)
    store = open_store(settings)
    try:
        hits = chunk_hits(store, collection, cfg, vectors, mode, texts)
    finally:
        store.close()
    return {qid: best_per_doc(found, TOP_DOCS, cfg.doc_chunks)
            for qid, found in zip(query_ids, hits, strict=True)}


def chunk_hits(store: VectorStore, collection: str, cfg: SearchConfig,
               vectors: np.ndarray | None, mode: str, texts: list[str] | None
               ) -> list[list[Hit]]:
    """Per query, enough chunk hits that TOP_DOCS distinct documents are among them, searched in
    `mode` with `cfg`'s fusion (one batch)."""
    info = store.get_collection(collection)
    if info is None:
        raise VectorStoreError(f"collection {collection!r} does not exist")
    most_chunks = max((int(p.get("chunk_count", 1)) for _, p in
                       store.scan(collection, _ALL, ["chunk_count"])), default=1)
    limit = min(TOP_DOCS * most_chunks, max(store.count(collection), 1))
    bm25 = (Bm25Encoder(config_from_identity(info.sparse))
            if mode != "dense" and info.sparse is not None else None)
    count = len(texts) if texts is not None else len(vectors if vectors is not None else [])
    requests = [StoreQuery(
        limit=limit, fields=("doc_id",), exact=True, fusion=cfg.fusion, rrf_k=cfg.rrf_k,
        prefetch=cfg.prefetch,
        dense=vectors[i] if mode != "sparse" and vectors is not None else None,
        sparse=bm25.query((texts or [])[i]) if bm25 is not None else None)
        for i in range(count)]
    return store.query_batch(collection, requests)


def best_per_doc(hits: list[Hit], top: int, chunks: int = 1) -> dict[str, float]:
    """Collapse chunk hits to documents, keep the `top` best: a document scores its best
    chunk's score, or the sum of its best `chunks` chunks' (`search.doc_chunks`)."""
    ranked = sorted(hits, key=lambda h: h.score, reverse=True)  # engines answer sorted: O(n)
    return {str(h.payload.get("doc_id")): h.score for h in doc_scores(ranked, chunks)[:top]}


def score(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-query nDCG@10, recall@10, recall@100 and MRR@10 from pytrec_eval."""
    import pytrec_eval

    main = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    # trec_eval's recip_rank has no cut-off: scoring the run cut at 10 (in trec_eval's own order,
    # score then doc id, both descending) gives MRR@10.
    top10 = {q: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10])
             for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    out = {}
    for qid in qrels:
        m = main.get(qid, {})
        out[qid] = {"ndcg@10": m.get("ndcg_cut_10", 0.0), "recall@10": m.get("recall_10", 0.0),
                    "recall@100": m.get("recall_100", 0.0),
                    "mrr@10": rr.get(qid, {}).get("recip_rank", 0.0)}
    return out


def mean_metrics(per_query: dict[str, dict[str, float]],
                 metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """Average of each metric over the scored queries."""
    n = max(len(per_query), 1)
    return {m: round(sum(q[m] for q in per_query.values()) / n, 5) for m in metrics}


def previous_run(settings: Settings, dataset: str, model_id: str,
                 before: datetime, mode: str = "dense") -> dict[str, Any] | None:
    """The latest quality run of this dataset, model and mode that started before `before`, or
    None (runs from before modes existed were dense)."""
    rows = [r for r in read_events(settings.events_dir, "quality_runs")
            if r["dataset"] == dataset and r["model_id"] == model_id
            and (r.get("mode") or "dense") == mode
            and r["ndcg_at_10"] is not None and r["started_at"] < before]
    return max(rows, key=lambda r: (r["started_at"], r["run_id"])) if rows else None


def previous_scores(settings: Settings, previous: dict[str, Any] | None
                    ) -> dict[str, dict[str, float]]:
    """The per-query scores of an earlier run (its `quality_query_results` rows, in its mode);
    empty without one."""
    if previous is None:
        return {}
    mode = previous.get("mode") or "dense"
    return {r["query_id"]: {m: r[_COLUMN[m]] for m in METRICS}
            for r in read_events(settings.events_dir, "quality_query_results")
            if r["run_id"] == previous["run_id"] and (r.get("mode") or "dense") == mode
            and all(r[_COLUMN[m]] is not None for m in METRICS)}


def check_gates(gates: QualityConfig, metrics: dict[str, float],
                previous: dict[str, Any] | None,
                compared: dict[str, Comparison] | None = None) -> list[str]:
    """One message per breached gate, naming the metric, its value and the gate: the floor, a
    drop of a mean beyond `max_drop`, and (with the per-query comparison) a significant drop of
    a gated metric."""
    breaches = []
    if metrics["ndcg@10"] < gates.min_ndcg_at_10:
        breaches.append(f"ndcg@10 = {metrics['ndcg@10']:.4f} is below the floor "
                        f"quality.min_ndcg_at_10 = {gates.min_ndcg_at_10}")
    if previous is not None:
        for metric in METRICS:
            before = previous.get(_COLUMN[metric])
            if before is not None and before - metrics[metric] > gates.max_drop + 1e-9:
                breaches.append(
                    f"{metric} = {metrics[metric]:.4f} dropped {before - metrics[metric]:.4f} from "
                    f"{before:.4f} (run {previous['run_id']}), more than quality.max_drop = "
                    f"{gates.max_drop}")
        breaches += [f"{m} is significantly worse than run {previous['run_id']}: "
                     f"{c.describe()}, under quality.significance = {gates.significance}"
                     for m, c in (compared or {}).items() if m in gates.gate_metrics and c.worse]
    return breaches


@dataclass(frozen=True)
class Verdict:
    """A run against the previous one, per mode: that run, its per-query scores, the paired
    comparison, and the gates breached."""

    previous: dict[str, dict[str, Any] | None]
    earlier: dict[str, dict[str, dict[str, float]]]
    compared: dict[str, dict[str, Comparison]]
    breaches: dict[str, list[str]]

    def record(self, events: EventLog, settings: Settings, dataset: str,
               per_mode: dict[str, dict[str, dict[str, float]]]) -> None:
        """The comparisons as events (`quality_comparisons`, `quality_query_changes`)."""
        for mode, per in self.compared.items():
            previous = self.previous[mode]
            if per and previous is not None:
                significance.record(events, settings.quality, "nightly", dataset, dataset, mode,
                                    (previous["run_id"], events.run_id), per,
                                    (self.earlier[mode], per_mode[mode]),
                                    "failed" if self.breaches[mode] else "passed")
        events.flush()


def judge(settings: Settings, dataset: str, model_id: str, started: datetime,
          per_mode: dict[str, dict[str, dict[str, float]]],
          means: dict[str, dict[str, float]]) -> Verdict:
    """Each mode's run against the latest earlier run of the same set, model and mode."""
    previous = {mode: previous_run(settings, dataset, model_id, started, mode)
                for mode in per_mode}
    earlier = {mode: previous_scores(settings, previous[mode]) for mode in per_mode}
    compared = {mode: compare_runs(settings.quality, earlier[mode], per_mode[mode], METRICS)
                if earlier[mode] else {} for mode in per_mode}
    breaches = {mode: [f"{mode}: {b}" for b in check_gates(settings.quality, means[mode],
                                                            previous[mode], compared[mode])]
                for mode in per_mode}
    return Verdict(previous, earlier, compared, breaches)


def record(settings: Settings, steps: Steps, events: EventLog, data: QualityData,
           model_id: str, collection: str, per_mode: dict[str, dict[str, dict[str, float]]],
           summary: dict[str, Any], breaches: dict[str, list[str]], started: Any,
           previous: dict[str, dict[str, Any] | None]) -> None:
    """Write the run's events (per mode) and one table report with the modes side by side."""
    now = utcnow()
    for mode, per_query in per_mode.items():
        for qid, m in per_query.items():
            events.add("quality_query_results", dataset=data.name, model_id=model_id,
                       query_id=qid, mode=mode, recorded_at=now,
                       **{_COLUMN[k]: v for k, v in m.items()})
        metrics = summary["modes"][mode]
        events.add("quality_runs", dataset=data.name, model_id=model_id, collection=collection,
                   mode=mode, queries=len(per_query), seconds=summary["seconds"],
                   status="failed" if breaches[mode] else "passed",
                   gate_message="; ".join(breaches[mode]) or None, started_at=started,
                   **{_COLUMN[k]: metrics[k] for k in METRICS})
    events.flush()
    default = summary["mode"]
    rows = []
    for metric in METRICS:
        row: dict[str, Any] = {"metric": metric}
        for mode in per_mode:
            prev = previous.get(mode)
            row[mode] = summary["modes"][mode][metric]
            row[f"{mode} previous"] = prev.get(_COLUMN[metric]) if prev else None
        row["gate"] = ((f">= {settings.quality.min_ndcg_at_10}, " if metric == "ndcg@10" else "")
                       + f"drop <= {settings.quality.max_drop}")
        failed = [mode for mode, msgs in breaches.items()
                  if any(b.startswith(f"{mode}: {metric} ") for b in msgs)]
        row["status"] = f"failed ({', '.join(failed)})" if failed else "passed"
        rows.append(row)
    any_breach = any(breaches.values())
    steps.table(
        f"quality-{slug(data.name)}", rows,
        f"Retrieval quality of {model_id} on {data.name} ({len(data.queries)} queries, run "
        f"{summary['run_id']}), modes {', '.join(per_mode)} (default {default}): "
        f"{'FAILED' if any_breach else 'passed'}")


@telemetry.traced("quality run")
def run_quality(settings: Settings, dataset: str, steps: Steps | None = None,
                limit_queries: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Index a set's corpus through the ingest job, then score it (plain steps: the CLI's way)."""
    from tessera.ingest.run import run_ingest

    steps = steps or PlainSteps()
    started = utcnow()
    scoped = dataset_settings(settings, Path(dataset), name)
    indexed = run_ingest(scoped, steps, sources=[scoped.sources[0].name], flow="quality")
    return score_quality(settings, steps, dataset, indexed, started, limit_queries, name)


def score_quality(settings: Settings, steps: Steps, dataset: str, indexed: dict[str, Any],
                  started: datetime, limit_queries: int | None = None,
                  name: str | None = None) -> dict[str, Any]:
    """Score an indexed set; record it; raise QualityGateError when a configured gate breaks.

    `started` is when the run began (before its corpus was indexed): the gate compares against
    the latest run that started before it."""
    clock = time.perf_counter()
    spec = get_spec(settings)
    data = load_dataset(Path(dataset), name, limit_queries)
    collection = quality_collection(settings, Path(dataset), name)
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    modes = collection_modes(settings, collection)
    vectors = steps.run("embed-queries", embed_queries, settings, texts)
    per_mode: dict[str, dict[str, dict[str, float]]] = {}
    for mode in modes:
        found = steps.run(f"retrieve-{mode}", retrieve, settings, collection, qids, vectors, mode,
                          texts, io=True)
        per_mode[mode] = steps.run(f"score-{mode}", score, data.qrels, found)
    default = settings.search.mode if settings.search.mode in per_mode else "dense"
    events = EventLog(settings.events_dir, new_run_id())
    means = {mode: mean_metrics(pq) for mode, pq in per_mode.items()}
    summary = {"run_id": events.run_id, "dataset": data.name, "model": spec.id,
               "queries": len(per_mode[default]), **means[default], "mode": default,
               "modes": means, "seconds": round(time.perf_counter() - clock, 2),
               "collection": collection, "chunks_embedded": indexed["chunks_embedded"],
               "search": tuned_values(search_settings(settings, collection))}
    verdict = judge(settings, data.name, spec.id, started, per_mode, means)
    breaches = verdict.breaches
    summary["comparisons"] = {mode: {m: c.row() for m, c in per.items()}
                              for mode, per in verdict.compared.items() if per}
    summary["power_notes"] = [f"{mode}: {n}" for mode, per in verdict.compared.items()
                              for n in power_notes(settings.quality, per)]
    record(settings, steps, events, data, spec.id, collection, per_mode, summary, breaches,
           started, verdict.previous)
    verdict.record(events, settings, data.name, per_mode)
    logger.info("quality %s", summary)
    failed = [b for mode in modes for b in breaches[mode]]
    if failed:
        raise QualityGateError(f"retrieval quality gate breached on {data.name} with {spec.id}: "
                               + "; ".join(failed))
    return summary
