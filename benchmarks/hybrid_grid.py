"""Issue 15: the fusion grid on SciFact, on the index `tessera quality` already built (no embedding
of documents; the 300 queries are embedded once).

    python -m benchmarks.hybrid_grid --home HOME

For each fusion (RRF with k 10 / 20 / 60, DBSF) and prefetch depth (100 chunks per side, or as deep
as the quality run looks: 100 documents' worth of chunks), nDCG@10 and recall@100 of documents
(best chunk each), scored by the same pytrec_eval code as `tessera quality`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import common


def grid(home: Path) -> dict[str, Any]:
    """Score every (fusion, k, prefetch) variant and the two single modes."""
    from tessera.core.beir import load_test_set
    from tessera.core.query import StoreQuery
    from tessera.core.settings import load_settings
    from tessera.core.sparse import Bm25Encoder, config_from_identity
    from tessera.core.types import Match
    from tessera.jobs.quality import TOP_DOCS, best_per_doc, embed_queries, mean_metrics, score
    from tessera.store.edge import EdgeStore

    settings = load_settings(None, home=str(home))
    store = EdgeStore(home / "qdrant")
    name = next(n for n in store.list_collections() if n.startswith("quality-scifact"))
    info = store.get_collection(name)
    assert info is not None and info.sparse is not None
    texts, qrels = load_test_set(common.SCIFACT)
    qids = list(qrels)
    qtexts = [texts[q] for q in qids]
    vectors = embed_queries(settings, qtexts)
    bm25 = Bm25Encoder(config_from_identity(info.sparse))
    sparse = [bm25.query(t) for t in qtexts]
    most = max(int(p.get("chunk_count", 1)) for _, p in store.scan(name, Match(), ["chunk_count"]))
    deep = min(TOP_DOCS * most, store.count(name))

    def run(limit: int, **kw: Any) -> dict[str, float]:
        requests = [StoreQuery(limit=limit, fields=("doc_id",), exact=True,
                               dense=vectors[i] if kw.get("dense", True) else None,
                               sparse=sparse[i] if kw.get("sparse", True) else None,
                               fusion=kw.get("fusion", "rrf"), rrf_k=kw.get("k", 60),
                               prefetch=kw.get("prefetch", 100))
                    for i in range(len(qids))]
        hits = store.query_batch(name, requests)
        found = {q: best_per_doc(h, TOP_DOCS) for q, h in zip(qids, hits, strict=True)}
        return mean_metrics(score({q: dict(qrels[q]) for q in qids}, found))

    rows = [{"variant": "dense", **run(deep, sparse=False)},
            {"variant": "sparse", **run(deep, dense=False)}]
    for prefetch, limit in (("100", 100), ("deep", deep)):
        for fusion, k in (("rrf", 10), ("rrf", 20), ("rrf", 60), ("dbsf", 0)):
            label = f"hybrid {fusion}{'' if fusion == 'dbsf' else f' k={k}'} prefetch {prefetch}"
            rows.append({"variant": label, **run(limit, fusion=fusion, k=k or 60,
                                                 prefetch=100 if prefetch == "100" else deep)})
            print(json.dumps(rows[-1]), flush=True)
    store.close()
    return {"collection": name, "deep_prefetch_chunks": deep, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Write benchmarks/results/hybrid-grid.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hybrid_grid")
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args(argv)
    result = {**grid(args.home), "machine": common.machine(),
              "command": " ".join(["python -m benchmarks.hybrid_grid", *sys.argv[1:]])}
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "hybrid-grid.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
