"""Search settings learned on a labelled set's train split, kept only through a gate on its test split.

`tessera tune DATASET` indexes the set's corpus the way `tessera quality DATASET` does (the same
collection: a second run embeds nothing), embeds the `train` queries once, and scores every
candidate on them: each fusion (RRF at several k, DBSF) crossed with each way chunk hits become
a document's score (`search.doc_chunks`). The best mean nDCG@10 on train wins (ties keep the
current settings). Only then is the `test` split read: the current and the chosen settings are
scored on it query by query and compared (tessera.jobs.significance), and the chosen settings
are written for the collection (tessera.core.tuned) unless they are significantly worse on a
gated metric, or drop a metric by more than `quality.max_drop`, or are the current ones already.

Not tuned: the prefetch depths and the HNSW `ef`. The pipeline scores exactly, with every
side fetching the chunks of the 100 best documents, so neither can change its score; tuning
them needs scoring at the service's k through the graph.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

from tessera.core import telemetry
from tessera.core.errors import UsageError
from tessera.core.events import EventLog, new_run_id, utcnow
from tessera.core.query import SearchConfig
from tessera.core.settings import Settings
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


def score_all(settings: Settings, collection: str, data: QualityData, mode: str,
              configs: list[SearchConfig]) -> list[dict[str, dict[str, float]]]:
    """Per config, the per-query scores on `data` (one engine batch per fusion; the document
    score is applied to the same chunk hits)."""
    qids = list(data.queries)
    texts = [data.queries[q] for q in qids]
    vectors = embed_queries(settings, texts) if mode != "sparse" else None
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


def choose(settings: Settings, collection: str, train: QualityData, mode: str,
           current: SearchConfig) -> tuple[SearchConfig, list[dict[str, Any]]]:
    """The best candidate on the train split by mean nDCG@10, and every trial's scores."""
    configs = candidates(current, mode)
    scored = score_all(settings, collection, train, mode, configs)
    trials = [{"search": tuned_values(cfg), **mean_metrics(per)}
              for cfg, per in zip(configs, scored, strict=True)]
    best = max(range(len(configs)), key=lambda i: (trials[i]["ndcg@10"], -i))
    return configs[best], trials


def tuning_mode(settings: Settings, collection: str) -> str:
    """The mode searches of this collection use by default (dense where it has no sparse side)."""
    modes = collection_modes(settings, collection)
    return settings.search.mode if settings.search.mode in modes else "dense"


@telemetry.traced("tuning run")
def run_tune(settings: Settings, dataset: str, steps: Steps | None = None,
             name: str | None = None) -> dict[str, Any]:
    """Index the set, choose on train, gate on test, write the settings when they pass."""
    from tessera.ingest.run import run_ingest

    steps = steps or PlainSteps()
    clock, started = time.perf_counter(), utcnow()
    path = Path(dataset)
    if not (path / "qrels" / "train.tsv").is_file():
        raise UsageError(f"{path} has no qrels/train.tsv to tune on; tuning on the test split "
                         "would grade the settings on the queries that chose them")
    scoped = dataset_settings(settings, path, name)
    run_ingest(scoped, steps, sources=[scoped.sources[0].name], flow="tune")
    collection = quality_collection(settings, path, name)
    mode = tuning_mode(settings, collection)
    current = search_settings(settings, collection)
    train = load_dataset(path, name, split="train")
    chosen, trials = steps.run("choose-on-train", choose, settings, collection, train, mode,
                               current)
    test = load_dataset(path, name)  # the test split: read only once the choice is made
    before, after = steps.run("score-test", score_all, settings, collection, test, mode,
                              [current, chosen])
    found = compare_runs(settings.quality, before, after, METRICS)
    return _decide(settings, steps, collection, test, mode, (current, chosen), trials,
                   (before, after), found, {"started": started, "clock": clock,
                                            "train_queries": len(train.queries)})


def _decide(settings: Settings, steps: Steps, collection: str, test: QualityData, mode: str,
            configs: tuple[SearchConfig, SearchConfig], trials: list[dict[str, Any]],
            scores: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]],
            found: dict[str, Comparison], run: dict[str, Any]) -> dict[str, Any]:
    """Apply or keep; record the run (events, a table) and return its summary."""
    current, chosen = configs
    breaches = significance.breaches(settings.quality, found, ("current", "tuned"))
    same = tuned_values(chosen) == tuned_values(current)
    decision = "kept" if same or breaches else "applied"
    events = EventLog(settings.events_dir, new_run_id())
    summary: dict[str, Any] = {
        "run_id": events.run_id, "dataset": test.name, "collection": collection, "mode": mode,
        "decision": decision, "current": tuned_values(current), "chosen": tuned_values(chosen),
        "train_queries": run["train_queries"], "test_queries": len(test.queries),
        "trials": trials, "comparison": {m: c.row() for m, c in found.items()},
        "reason": "; ".join(breaches) or ("the current settings scored best on train" if same
                                          else None),
        "power_notes": significance.power_notes(settings.quality, found)}
    if decision == "applied":
        write_tuned(settings, collection, {"search": summary["chosen"], "run_id": events.run_id,
                                           "dataset": test.name, "tuned_at": utcnow()})
    summary["seconds"] = round(time.perf_counter() - run["clock"], 2)
    _record(settings, steps, events, summary, scores, found, run["started"])
    return summary


def _record(settings: Settings, steps: Steps, events: EventLog, summary: dict[str, Any],
            scores: tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]],
            found: dict[str, Comparison], started: Any) -> None:
    best_train = max(t["ndcg@10"] for t in summary["trials"])
    events.add("tuning_runs", dataset=summary["dataset"], collection=summary["collection"],
               mode=summary["mode"], decision=summary["decision"], reason=summary["reason"],
               current=_text(summary["current"]), chosen=_text(summary["chosen"]),
               trials=len(summary["trials"]), train_queries=summary["train_queries"],
               test_queries=summary["test_queries"],
               train_ndcg_at_10_current=summary["trials"][0]["ndcg@10"],
               train_ndcg_at_10_chosen=best_train,
               test_ndcg_at_10_current=found["ndcg@10"].baseline,
               test_ndcg_at_10_chosen=found["ndcg@10"].candidate,
               p_value=found["ndcg@10"].p_value, seconds=summary["seconds"],
               started_at=started, finished_at=utcnow())
    significance.record(events, settings.quality, "tune", summary["collection"],
                        summary["dataset"], summary["mode"], ("current", "tuned"), found, scores,
                        summary["decision"])
    events.flush()
    steps.table(f"tune-{slug(summary['dataset'])}", [
        {"settings": _text(t["search"]), **{m: t[m] for m in METRICS}} for t in summary["trials"]],
        f"Tuning {summary['collection']} on {summary['dataset']} train "
        f"({summary['train_queries']} queries): {summary['decision']}; test nDCG@10 "
        f"{found['ndcg@10'].describe()}")
    logger.info("tuning %s", {k: v for k, v in summary.items() if k != "trials"})


def _text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))

