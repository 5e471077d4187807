"""Int8 query embedding against the shipped default, on all of SciFact, in one run.

    python -m benchmarks.int8_queries [--home benchmarks/out/defaults/home]

On the SciFact quality collection (`tessera quality scifact` under `--home`; built there first if
missing), documents embedded as shipped (OpenVINO bf16): the 300 test queries are embedded with
the shipped query path and with `api.query_precision = "int8"` (models.quantized: NNCF, calibrated
on 300 of the collection's chunks, as a serving process does). Reported: the cosine of each int8
query vector to its default one; nDCG@10 and recall@100 per mode through the quality pipeline
(`tessera.jobs.quality.retrieve`, the collection's search settings), with the paired comparison
the gates use (95% bootstrap interval, permutation p); and the time to embed one query at a time,
both ways, interleaved over `--rounds`, on all cores and on one OpenVINO thread. Results: benchmarks/results/int8_queries.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

HOME = common.OUT / "defaults" / "home"


def _collection(settings: Any) -> str:
    from tessera.jobs.quality import run_quality
    from tessera.store import open_store

    store = open_store(settings)
    try:
        found = [n for n in store.list_collections() if n.startswith("quality-scifact")]
    finally:
        store.close()
    if not found:
        run_quality(settings, str(common.SCIFACT))
        return _collection(settings)
    return found[0]


def _per_query_ms(backend: Any, queries: list[str]) -> float:
    started = time.perf_counter()
    for q in queries:
        backend.embed_queries([q])
    return (time.perf_counter() - started) * 1000 / len(queries)


def run(home: Path, rounds: int) -> dict[str, Any]:
    from models import get_spec
    from models.optimized import OpenVINOBackend
    from models.quantized import int8_query_ir
    from models.registry import resolve_model_path
    from tessera.core.beir import load_test_set
    from tessera.core.settings import load_settings
    from tessera.jobs.quality import mean_metrics, retrieve, score
    from tessera.jobs.significance import compare
    from tessera.service.service import SearchService

    settings = load_settings(None, home=str(home))
    name = _collection(settings)
    service = SearchService(settings)
    calibration = service.sample_texts(name)
    service.close()
    spec = get_spec(settings)
    path, emb = resolve_model_path(spec, settings.model_cache_dir), settings.embedding
    default = OpenVINOBackend(spec, path, settings.model_cache_dir, emb.precision, emb.batch_size)
    made = int8_query_ir(spec, path, settings.model_cache_dir, lambda: calibration)
    int8 = OpenVINOBackend(spec, path, settings.model_cache_dir, emb.precision, emb.batch_size,
                           query_ir=made)
    texts, qrels = load_test_set(common.SCIFACT)
    qids = list(qrels)
    queries = [texts[q] for q in qids]
    vectors = {"default": default.embed_queries(queries), "int8": int8.embed_queries(queries)}
    a, b = vectors["default"], vectors["int8"]
    cosine = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    modes: dict[str, Any] = {}
    for mode in ("dense", "sparse", "hybrid"):
        runs = {arm: score({q: dict(qrels[q]) for q in qids},
                           retrieve(settings, name, qids, v, mode, queries))
                for arm, v in vectors.items()}
        found = compare(runs["default"], runs["int8"], ("ndcg@10", "recall@100"),
                        settings.quality.significance, settings.quality.max_drop)
        modes[mode] = {"default": mean_metrics(runs["default"]), "int8": mean_metrics(runs["int8"]),
                       "comparison": {m: asdict(c) for m, c in found.items()}}
        print(mode, modes[mode]["default"]["ndcg@10"], modes[mode]["int8"]["ndcg@10"], flush=True)
    one = {"default": OpenVINOBackend(spec, path, settings.model_cache_dir, emb.precision,
                                      emb.batch_size, threads=1),
           "int8": OpenVINOBackend(spec, path, settings.model_cache_dir, emb.precision,
                                   emb.batch_size, threads=1, query_ir=made)}
    timing: dict[str, list[float]] = {"default": [], "int8": []}
    single: dict[str, list[float]] = {"default": [], "int8": []}
    for _ in range(rounds):
        for arm, backend in (("default", default), ("int8", int8)):
            timing[arm].append(_per_query_ms(backend, queries))
            single[arm].append(_per_query_ms(one[arm], queries))
    return {"collection": name, "queries": len(qids), "calibration_texts": len(calibration),
            "precision": emb.precision, "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()), "modes": modes, "ms_per_query": timing,
            "ms_per_query_median": {k: statistics.median(v) for k, v in timing.items()},
            "one_thread_ms_per_query": single,
            "one_thread_ms_per_query_median": {k: statistics.median(v)
                                               for k, v in single.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=HOME)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    result = run(args.home, args.rounds)
    print(f"wrote {common.save_result('int8_queries', {**result, 'machine': common.machine()})}")


if __name__ == "__main__":
    main()
