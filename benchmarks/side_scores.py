"""What readable scores cost: a hybrid answer's per-side scores (`scores.dense`, `scores.sparse`)
are one more batched engine call over just the k points returned. Times the hybrid document
query and that call on the same store, per query, queries embedded before timing.

    python -m benchmarks.side_scores [--docs 5183] [--queries 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)


def measure(docs: int, queries: int) -> dict[str, Any]:
    """Ingest `docs` SciFact documents, then time each query's two engine calls."""
    from models import make_backend
    from tessera.core.query import StoreQuery
    from tessera.core.settings import load_settings
    from tessera.ingest.run import run_ingest
    from tessera.service.search import SearchQuery, encode_query, side_scores
    from tessera.store import open_store

    root = Path(tempfile.mkdtemp(prefix="side-scores-"))
    corpus = common.write_corpus(common.corpus_records(limit=docs), root / "corpus")
    settings = load_settings(common.write_config(root / "home", corpus, runtime="openvino",
                                                 precision="bf16"))
    run_ingest(settings)
    texts = [json.loads(line)["text"] for line in
             (common.SCIFACT / "queries.jsonl").read_text().splitlines()][:queries]
    store, backend = open_store(settings), make_backend(settings)
    try:
        name = settings.collection
        info = store.get_collection(name)
        assert info is not None
        fused, sides = [], []
        for text in texts:
            dense, sparse = encode_query(settings, info, SearchQuery(text=text, k=10),
                                         "hybrid", backend)
            request = StoreQuery(limit=10, dense=dense, sparse=sparse, hnsw_ef=256)
            start = time.perf_counter()
            hits = store.query_documents(name, request)
            middle = time.perf_counter()
            side_scores(store, name, request, hits)
            fused.append((middle - start) * 1000)
            sides.append((time.perf_counter() - middle) * 1000)
        points = store.count(name)
    finally:
        store.close()
    return {"docs": docs, "points": points, "queries": len(texts), "k": 10,
            "hybrid_p50_ms": _percentile(fused, 0.5), "hybrid_p99_ms": _percentile(fused, 0.99),
            "sides_p50_ms": _percentile(sides, 0.5), "sides_p99_ms": _percentile(sides, 0.99),
            "ratio_p50": round(statistics.median(sides) / statistics.median(fused), 3),
            "machine": common.machine()}


def main() -> None:
    """Run and save `results/side_scores.json`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5183)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    result = measure(args.docs, args.queries)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}))
    common.save_result("side_scores", result)


if __name__ == "__main__":
    main()
