"""Goal 4, search: p50/p99 latency on a 50,000-point Qdrant Edge collection.

A store benchmark, not an embedding one: the points reuse real SciFact document vectors (from
`ndcg.py`) cycled under new ids, each with a small Gaussian perturbation (sigma 0.01 per
dimension, then re-normalised) so no two points are identical. Queries are the 300 SciFact test
queries' real vectors; every query goes through `EdgeStore.search`, the path `tessera search` uses.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common


def run(vectors: Path, queries: Path, points: int = 50_000, passes: int = 3) -> dict[str, Any]:
    """Build the collection, optimise it, then time every query `passes` times."""
    from models.registry import BUILTIN
    from tessera.core.types import CollectionInfo, Match, PointRecord, point_id
    from tessera.store.edge import EdgeStore

    base = np.load(vectors)
    qv = np.load(queries)
    rng = np.random.default_rng(7)
    root = common.OUT / "search-store"
    shutil.rmtree(root, ignore_errors=True)
    store = EdgeStore(root)
    spec = BUILTIN[common.MODEL]
    name = "bench-50k"
    store.create_collection(CollectionInfo.for_model(name, spec))
    parts = 10
    start = time.perf_counter()
    for lo in range(0, points, 512):
        batch = []
        for i in range(lo, min(lo + 512, points)):
            v = base[i % len(base)] + rng.normal(0, 0.01, base.shape[1]).astype(np.float32)
            doc = f"d{i % len(base)}-r{i // len(base)}"
            batch.append(PointRecord(point_id(name, doc, 0), v / np.linalg.norm(v), {
                "doc_id": doc, "source": f"part{i % parts}", "modality": "text",
                "chunk_index": 0, "chunk_count": 1, "expires_at": 2**31 - 1}))
        store.upsert(name, batch)
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    store.optimize(name)
    optimize_s = time.perf_counter() - start
    out: dict[str, Any] = {"points": store.count(name), "upsert_seconds": upsert_s,
                           "optimize_seconds": optimize_s, "queries": len(qv), "passes": passes}
    for label, match in (("unfiltered", None), ("filtered (source = 1 of 10 parts)",
                                                 Match(source="part3"))):
        lat = []
        for _ in range(passes):
            for q in qv:
                t0 = time.perf_counter()
                store.search(name, q, 10, match)
                lat.append((time.perf_counter() - t0) * 1000)
        out[label] = {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                      "mean_ms": float(np.mean(lat)), "n": len(lat)}
    store.close()
    shutil.rmtree(root, ignore_errors=True)
    return out
