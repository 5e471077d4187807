"""Search on a large embedded shard as an ingest leaves it: with and without the HNSW graph.

    python -m benchmarks.store_search [--points 1000000] [--hnsw-m 16] [--hnsw-ef 256]
                                      [--queries 200]

For each `--hnsw-m`, writes `--points` random unit 384-d vectors with the pipeline's payload
(doc_id, source out of 10, modality, chunk fields, expires_at, a title and ~200 characters of
text) and a 12-term BM25-like sparse vector each, through `EdgeStore` in batches of 512 (the
writer seals as an ingest does), closes it (the last seal), then opens it the way `tessera api`
does (a search pool per core) and times document searches, k 10, without and then with a
source filter (a tenth of the points): dense, then hybrid (dense + sparse fused by RRF), 10
warm-up queries first (the vectors are memory-mapped: the first searches read them from disk). Queries are stored vectors with noise (cosine ~0.9 to
their source point) and 4 of its sparse terms. Recall@10 of the dense documents is measured
against the engine's exact search on the same shard. Store only: no model, no HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

DIM = 384
SOURCES = 10
WORDS = 30_000


def _points(lo: int, hi: int, rng: np.random.Generator) -> tuple[np.ndarray, list[Any]]:
    from tessera.core.sparse import SparseVec

    vectors = rng.normal(size=(hi - lo, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sparse = [SparseVec(tuple(int(t) for t in np.sort(rng.choice(WORDS, 12, replace=False))),
                        tuple(float(w) for w in rng.uniform(0.5, 2.0, 12)))
              for _ in range(hi - lo)]
    return vectors, sparse


def build(root: Path, points: int, m: int) -> dict[str, Any]:
    """Write the shard; seconds and this process's peak RSS so far."""
    from tessera.core.types import CollectionInfo, PointRecord, point_id
    from tessera.store.base import HnswParams
    from tessera.store.edge import EdgeStore

    shutil.rmtree(root, ignore_errors=True)
    store = EdgeStore(root, hnsw=HnswParams(m, 100))
    info = CollectionInfo("big", "random-384", "v", DIM, "cosine", "v",
                          sparse={"k": 1.2, "b": 0.75, "avg_len": 256})
    store.create_collection(info)
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    for lo in range(0, points, 512):
        hi = min(lo + 512, points)
        vectors, sparse = _points(lo, hi, rng)
        store.upsert("big", [PointRecord(point_id("big", f"d{i}", 0), vectors[i - lo], {
            "doc_id": f"src{i % SOURCES}/doc{i}", "source": f"src{i % SOURCES}",
            "modality": "text", "chunk_index": 0, "chunk_count": 1, "expires_at": 2**31 - 1,
            "title": f"document {i}", "text": f"point {i} " + "lorem ipsum dolor " * 11},
            sparse=sparse[i - lo]) for i in range(lo, hi)])
    written = time.perf_counter() - started
    store.close()
    return {"write_seconds": round(written, 1),
            "write_and_close_seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _pct(values: list[float]) -> dict[str, float]:
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 3) for q in (50, 99)}


def measure(root: Path, points: int, queries: int, ef: int | None) -> dict[str, Any]:
    """Dense and hybrid document searches on the shard, opened as the API opens a snapshot."""
    from tessera.core.query import StoreQuery
    from tessera.core.sparse import SparseVec
    from tessera.core.types import Match
    from tessera.store.edge import EdgeStore

    store = EdgeStore(root, search_threads=len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(11)
    vectors, sparse = _points(0, min(points, 20_000), rng)  # the first points, as written
    pick = np.random.default_rng(5).choice(len(vectors), queries + 10, replace=False)
    noise = np.random.default_rng(6).normal(0, 0.025, (len(pick), DIM)).astype(np.float32)
    asks = []
    for j, i in enumerate(pick):
        v = vectors[i] + noise[j]
        terms = sparse[i].indices[:4]
        asks.append((v / np.linalg.norm(v), SparseVec(terms, (1.0,) * len(terms)),
                     f"src{i % SOURCES}"))
    out: dict[str, Any] = {}
    try:
        for filtered in (False, True):
            for mode in ("dense", "hybrid"):
                lat = []
                for j, (v, s, source) in enumerate(asks):
                    q = StoreQuery(limit=10, dense=v, sparse=s if mode == "hybrid" else None,
                                   match=Match(source=source if filtered else None), hnsw_ef=ef)
                    t = time.perf_counter()
                    store.query_documents("big", q)
                    if j >= 10:
                        lat.append((time.perf_counter() - t) * 1000)
                out[f"{mode}{'_source_filter' if filtered else ''}"] = _pct(lat)
        for filtered in (False, True):
            hits = total = 0
            for v, _, source in asks[10:60]:
                match = Match(source=source if filtered else None)
                approx = {h.id for h in store.query_documents(
                    "big", StoreQuery(limit=10, dense=v, match=match, hnsw_ef=ef))}
                exact = {h.id for h in store.query_documents(
                    "big", StoreQuery(limit=10, dense=v, match=match, exact=True))}
                hits += len(approx & exact)
                total += len(exact)
            key = "_source_filter" if filtered else ""
            out[f"dense_recall_at_10_vs_exact{key}"] = round(hits / total, 4)
    finally:
        store.close()
    return out


def main(argv: list[str] | None = None) -> None:
    """Build and measure per graph setting; save benchmarks/results/store_search.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_search")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--hnsw-m", default="16",
                        help="comma-separated; run one per process for a clean peak RSS")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-ef", type=int, default=256,
                        help="graph search candidates (search.hnsw_ef; 0: the engine's default)")
    args = parser.parse_args(argv)
    rows = []
    for m in (int(x) for x in args.hnsw_m.split(",")):
        root = common.OUT / f"store-search-{args.points}-m{m}"
        row: dict[str, Any] = {"points": args.points, "hnsw_m": m, **build(root, args.points, m)}
        print(json.dumps(row), flush=True)
        row.update(measure(root, args.points, args.queries, args.hnsw_ef or None),
                   hnsw_ef=args.hnsw_ef or None)
        row["loadavg"] = os.getloadavg()
        print(json.dumps(row), flush=True)
        rows.append(row)
        shutil.rmtree(root, ignore_errors=True)
        path = common.save_result(f"store_search-m{args.hnsw_m.replace(',', '-')}"
                                  f"-ef{args.hnsw_ef or 'default'}",
                                  {"rows": rows, "machine": common.machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
