"""Search settings learned on a labelled set's train split, kept only through a gate on its test split.

`tessera tune DATASET` indexes the set's corpus the way `tessera quality DATASET` does (the same
collection: a second run embeds nothing), embeds the `train` queries once, and chooses in two
stages, each by mean nDCG@10 on train (ties keep the current settings):

1. What ranks: each fusion (RRF at several k, DBSF) crossed with each way chunk hits become a
   document's score (`search.doc_chunks`), scored as `tessera quality` scores (exact search, the
   100 best documents), where depth and the graph play no part.
2. How deep: each side's prefetch depth, then the HNSW `ef`, scored as the search service
   answers (the top SERVICE_K documents, through the graph, documents grouped from over-fetched
   chunks). Scores are compared at 3 decimals, and among equals the cheapest setting wins:
   deeper prefetches and a larger `ef` cost time on every search.

Only then is the `test` split read: the current and the chosen settings are scored on it query
by query both ways and compared (tessera.jobs.significance), and the chosen settings are written
for the collection (tessera.core.tuned) unless either comparison finds them significantly worse
on a gated metric or a metric dropping by more than `quality.max_drop`, or they are the current
ones already.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.core import telemetry
from tessera.core.errors import UsageError
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.query import SearchConfig, StoreQuery
from tessera.core.settings import Settings
from tessera.core.sparse import Bm25Encoder, config_from_identity
from tessera.core.steps import PlainSteps, Steps
from tessera.core.tuned import search_settings, tuned_values, write_tuned
from tessera.jobs import significance
from tessera.jobs.quality import (
    METRICS,
    TOP_DOCS,
    QualityData,
    best_per_doc,
    chunk_hits,
    collection_modes,
    dataset_settings,
    embed_queries,
    load_dataset,
    mean_metrics,
    quality_collection,
    score,
    slug,
)
from tessera.jobs.significance import Comparison, compare_runs
from tessera.store import open_store

logger = logging.getLogger(__name__)
FUSIONS: tuple[dict[str, Any], ...] = (
    {"fusion": "rrf", "rrf_k": 10}, {"fusion": "rrf", "rrf_k": 30}, {"fusion": "rrf", "rrf_k": 60},
    {"fusion": "rrf", "rrf_k": 100}, {"fusion": "dbsf"})
DOC_CHUNKS = (1, 2, 3)
PREFETCHES = (40, 100, 200, 400)  # below 40 a prefetch is the service's default k x overfetch
EFS = (64, 128, 256, 512)
SERVICE_K = 10
SERVICE_METRICS = ("ndcg@10", "recall@10", "mrr@10")  # what a top-10 answer can be scored on


def candidates(current: SearchConfig, mode: str) -> list[SearchConfig]:
    """The settings a run tries: fusions only matter to hybrid searches, the document score to
    every mode. The current settings come first (they win ties)."""
    fusions = FUSIONS if mode == "hybrid" else ({},)
    out = [current]
    for fusion, chunks in itertools.product(fusions, DOC_CHUNKS):
        trial = current.model_copy(update={**fusion, "doc_chunks": chunks})
        if tuned_values(trial) != tuned_values(current):
            out.append(trial)
    return out


def embedded(settings: Settings, data: QualityData, mode: str) -> np.ndarray | None:
    """The set's queries embedded once (in the order of `data.queries`); None in sparse mode."""
    return embed_queries(settings, list(data.queries.values())) if mode != "sparse" else None


def score_all(settings: Settings, collection: str, data: QualityData, mode: str,
              configs: list[SearchConfig], vectors: np.ndarray | None
              ) -> list[dict[str, dict[str, float]]]:
    """Per config, the per-query scores on `data` (one engine batch per fusion; the document
    score is applied to the same chunk hits)."""
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    store = open_store(settings)
    try:
        hits: dict[tuple[str, int], list[Any]] = {}
        out = []
        for cfg in configs:
            key = (cfg.fusion, cfg.rrf_k)
            if key not in hits:
                hits[key] = chunk_hits(store, collection, cfg, vectors, mode, texts)
            run = {q: best_per_doc(found, TOP_DOCS, cfg.doc_chunks)
                   for q, found in zip(qids, hits[key], strict=True)}
            out.append(score(data.qrels, run))
        return out
    finally:
        store.close()


def depth_rounds(mode: str) -> list[list[dict[str, int]]]:
    """Stage 2's rounds, as changes to the settings chosen so far: each side's prefetch (hybrid
    only), then `ef` (where a graph is searched)."""
    rounds: list[list[dict[str, int]]] = []
    if mode == "hybrid":
        rounds.append([{"dense_prefetch": d, "sparse_prefetch": s}
                       for d, s in itertools.product(PREFETCHES, PREFETCHES)])
    if mode != "sparse":
        rounds.append([{"hnsw_ef": ef} for ef in EFS])
    return rounds


def _cost(cfg: SearchConfig) -> tuple[int, int]:
    values = tuned_values(cfg)
    return values["hnsw_ef"], values["dense_prefetch"] + values["sparse_prefetch"]


def service_runs(settings: Settings, collection: str, data: QualityData, mode: str,
                 configs: list[SearchConfig], vectors: np.ndarray | None
                 ) -> list[dict[str, dict[str, float]]]:
    """Per config, the per-query scores of the top SERVICE_K documents as the search service
    finds them: the graph at `hnsw_ef`, each side's prefetch, documents grouped from chunks."""
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    store = open_store(settings)
    try:
        info = store.get_collection(collection)
        bm25 = (Bm25Encoder(config_from_identity(info.sparse))
                if mode != "dense" and info is not None and info.sparse is not None else None)
        sparse = [bm25.query(t) for t in texts] if bm25 is not None else None
        out = []
        for cfg in configs:
            run = {}
            for i, q in enumerate(qids):
                hits = store.query_documents(collection, StoreQuery(
                    limit=SERVICE_K, dense=vectors[i] if vectors is not None else None,
                    sparse=sparse[i] if sparse is not None else None, fields=("doc_id",),
                    fusion=cfg.fusion, rrf_k=cfg.rrf_k, prefetch=cfg.prefetch,
                    dense_prefetch=cfg.dense_prefetch, sparse_prefetch=cfg.sparse_prefetch,
                    hnsw_ef=cfg.hnsw_ef, overfetch=cfg.group_overfetch,
                    doc_chunks=cfg.doc_chunks))
                run[q] = {str(h.payload.get("doc_id")): h.score for h in hits}
            out.append({q: {m: v[m] for m in SERVICE_METRICS}
                        for q, v in score(data.qrels, run).items()})
        return out
    finally:
        store.close()


def choose_depth(settings: Settings, collection: str, train: QualityData, mode: str,
                 chosen: SearchConfig, vectors: np.ndarray | None
                 ) -> tuple[SearchConfig, list[dict[str, Any]]]:
    """Stage 2: the cheapest depths that score as well as any (at 3 decimals) on train; each
    round starts from the best of the one before."""
    trials: list[dict[str, Any]] = []
    for updates in depth_rounds(mode):
        configs = [chosen.model_copy(update=u) for u in updates]
        scored = service_runs(settings, collection, train, mode, [chosen, *configs], vectors)
        means = [mean_metrics(per, SERVICE_METRICS) for per in scored]
        trials += [{"search": tuned_values(c), **m} for c, m in zip(configs, means[1:],
                                                                     strict=True)]
        options = [chosen, *configs]
        best = max(range(len(options)), key=lambda i: (round(means[i]["ndcg@10"], 3),
                                                       tuple(-c for c in _cost(options[i]))))
        chosen = options[best]
    return chosen, trials


def choose(settings: Settings, collection: str, train: QualityData, mode: str,
           current: SearchConfig, vectors: np.ndarray | None
           ) -> tuple[SearchConfig, list[dict[str, Any]]]:
    """The best candidate on the train split by mean nDCG@10, and every trial's scores."""
    configs = candidates(current, mode)
    scored = score_all(settings, collection, train, mode, configs, vectors)
    trials = [{"search": tuned_values(cfg), **mean_metrics(per)}
              for cfg, per in zip(configs, scored, strict=True)]
    best = max(range(len(configs)), key=lambda i: (trials[i]["ndcg@10"], -i))
    return configs[best], trials


def tuning_mode(settings: Settings, collection: str) -> str:
    """The mode searches of this collection use by default (dense where it has no sparse side)."""
    modes = collection_modes(settings, collection)
    return settings.search.mode if settings.search.mode in modes else "dense"


@dataclass(frozen=True)
class _Tested:
    """Current against chosen on the test split, one way of scoring: per-query scores of both
    and their paired comparison."""

    label: str  # "full depth" (as tessera quality scores) or "k=10" (as the service answers)
    scores: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]
    found: dict[str, Comparison]


@telemetry.traced("tuning run")
def run_tune(settings: Settings, dataset: str, steps: Steps | None = None,
             name: str | None = None) -> dict[str, Any]:
    """Index the set, choose on train, gate on test, write the settings when they pass."""
    from tessera.ingest.run import run_ingest

    steps = steps or PlainSteps()
    clock, started = time.perf_counter(), utcnow()
    path = Path(dataset)
    train = _train_split(path, name)  # before any work: a set that cannot be tuned is refused
    scoped = dataset_settings(settings, path, name)
    run_ingest(scoped, steps, sources=[scoped.sources[0].name], flow="tune")
    collection = quality_collection(settings, path, name)
    mode = tuning_mode(settings, collection)
    current = search_settings(settings, collection)
    vectors = steps.run("embed-train", embedded, settings, train, mode)
    ranked, trials = steps.run("choose-on-train", choose, settings, collection, train, mode,
                               current, vectors)
    chosen, deep = steps.run("choose-depth-on-train", choose_depth, settings, collection, train,
                             mode, ranked, vectors)
    test = load_dataset(path, name)  # the test split: read only once the choice is made
    both, vectors = [current, chosen], steps.run("embed-test", embedded, settings, test, mode)
    full = steps.run("score-test", score_all, settings, collection, test, mode, both, vectors)
    top = steps.run("score-test-k10", service_runs, settings, collection, test, mode, both,
                    vectors)
    tested = [_Tested("full depth", (full[0], full[1]),
                      compare_runs(settings.quality, full[0], full[1], METRICS)),
              _Tested(f"k={SERVICE_K}", (top[0], top[1]),
                      compare_runs(settings.quality, top[0], top[1], SERVICE_METRICS))]
    return _decide(settings, steps, collection, test, mode, (current, chosen),
                   {"trials": trials, "depth_trials": deep, "started": started, "clock": clock,
                    "train_queries": len(train.queries)}, tested)


def _train_split(path: Path, name: str | None) -> QualityData:
    """The set's judged train queries; a UsageError when there are none to tune on, or no test
    split to check the choice against (found only by path: test.tsv is not opened here)."""
    for split in ("train", "test"):
        if not (path / "qrels" / f"{split}.tsv").is_file():
            raise UsageError(f"{path} has no qrels/{split}.tsv: tuning needs a train split to "
                             "choose on and a test split, never seen by the choice, to check it")
    train = load_dataset(path, name, split="train")
    if not train.queries:
        raise UsageError(f"{path}/qrels/train.tsv judges no query of queries.jsonl; nothing to "
                         "tune on")
    return train


def _decide(settings: Settings, steps: Steps, collection: str, test: QualityData, mode: str,
            configs: tuple[SearchConfig, SearchConfig], run: dict[str, Any],
            tested: list[_Tested]) -> dict[str, Any]:
    """Apply or keep; record the run (events, a table) and return its summary."""
    current, chosen = configs
    gates = settings.quality
    breaches = [f"{t.label}: {b}" for t in tested
                for b in significance.breaches(gates, t.found, ("current", "tuned"))]
    same = tuned_values(chosen) == tuned_values(current)
    decision = "kept" if same or breaches else "applied"
    events = EventLog(settings.events_dir, new_run_id())
    summary: dict[str, Any] = {
        "run_id": events.run_id, "dataset": test.name, "collection": collection, "mode": mode,
        "decision": decision, "current": tuned_values(current), "chosen": tuned_values(chosen),
        "train_queries": run["train_queries"], "test_queries": len(test.queries),
        "trials": run["trials"], "depth_trials": run["depth_trials"],
        "comparison": {m: c.row() for m, c in tested[0].found.items()},
        "comparison_k10": {m: c.row() for m, c in tested[1].found.items()},
        "reason": "; ".join(breaches) or ("the current settings scored best on train" if same
                                          else None),
        "power_notes": [f"{t.label}: {n}" for t in tested
                        for n in significance.power_notes(gates, t.found)]}
    if decision == "applied":
        write_tuned(settings, collection, {"search": summary["chosen"], "run_id": events.run_id,
                                           "dataset": test.name, "tuned_at": utcnow()})
    summary["seconds"] = round(time.perf_counter() - run["clock"], 2)
    _record(settings, steps, events, summary, tested, run["started"])
    return summary


def _record(settings: Settings, steps: Steps, events: EventLog, summary: dict[str, Any],
            tested: list[_Tested], started: Any) -> None:
    found = tested[0].found
    events.add("tuning_runs", dataset=summary["dataset"], collection=summary["collection"],
               mode=summary["mode"], decision=summary["decision"], reason=summary["reason"],
               current=_text(summary["current"]), chosen=_text(summary["chosen"]),
               trials=len(summary["trials"]) + len(summary["depth_trials"]),
               train_queries=summary["train_queries"], test_queries=summary["test_queries"],
               train_ndcg_at_10_current=summary["trials"][0]["ndcg@10"],
               train_ndcg_at_10_chosen=max(t["ndcg@10"] for t in summary["trials"]),
               test_ndcg_at_10_current=found["ndcg@10"].baseline,
               test_ndcg_at_10_chosen=found["ndcg@10"].candidate,
               p_value=found["ndcg@10"].p_value, seconds=summary["seconds"],
               started_at=started, finished_at=utcnow())
    for t in tested:  # the k=10 comparison under its own dataset label, as the marts key it
        dataset = summary["dataset"] + ("" if t is tested[0] else f" ({t.label})")
        significance.record(events, settings.quality, "tune", summary["collection"], dataset,
                            summary["mode"], ("current", "tuned"), t.found, t.scores,
                            summary["decision"])
    events.flush()
    steps.table(f"tune-{slug(summary['dataset'])}", [
        {"settings": _text(t["search"]), **{m: t.get(m) for m in METRICS}}
        for t in summary["trials"] + summary["depth_trials"]],
        f"Tuning {summary['collection']} on {summary['dataset']} train "
        f"({summary['train_queries']} queries): {summary['decision']}; test nDCG@10 "
        f"{found['ndcg@10'].describe()}; at k={SERVICE_K} "
        f"{tested[1].found['ndcg@10'].describe()}")
    logger.info("tuning %s", {k: v for k, v in summary.items()
                              if k not in ("trials", "depth_trials")})


def _text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))

